"""Vision benchmark: training and encoding frames/s of every V variant.

    python benchmarks/vision.py [--quick] [--data STORE] [--out benchmarks/results/vision.md]

Training: the variant's LightningModule on the smoke experiment, 64x64 frames, batch 64,
2 torch threads, timed per optimiser step (forward + backward + update, data loading
excluded) after warm-up steps. "frames" counts every image the step encodes (a JEPA pair
is 2), "samples" the batch items. Encoding: ``VisionModule.encode`` over stored frames in
batches of 256, reading from the store's memory maps. Without ``--data`` a small VizDoom
store is collected into a temporary folder first.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from common import StepTimer  # benchmarks/common.py (scripts run from their folder)
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["vae", "jepa_ema", "jepa_vicreg", "jepa_sigreg", "jepa_none", "random",
            "jepa_ema_resnet18"]


def batch_counts(batch) -> dict[str, int]:
    """Frames a training batch encodes (a JEPA pair is 2 per sample) and its samples."""
    obs = batch["obs"]
    return {"frames": obs.numel() // int(np.prod(obs.shape[-3:])), "samples": obs.shape[0]}


def load_variant(name: str, store):
    from jepa_wm.config import experiment_parser
    from jepa_wm.vision.base import build_vision
    from jepa_wm.vision.train import resolve_spec

    cfg = experiment_parser().parse_args([
        "--config", str(ROOT / "configs/experiments/smoke.yaml"),
        "--config", str(ROOT / f"configs/variants/{name}.yaml")])
    return build_vision(resolve_spec(cfg.vision_model, store))


def train_rate(model, store, steps: int, warmup: int, batch: int) -> dict:
    from jepa_wm.data.datasets import FrameDataset, WindowDataset

    ds = (WindowDataset(store, model.window, stride=1) if model.data_view == "windows"
          else FrameDataset(store))
    timer = StepTimer(warmup, batch_counts)
    trainer = pl.Trainer(max_steps=steps + warmup, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, accelerator="cpu", callbacks=[timer])
    trainer.fit(model, DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True))
    return {"frames_per_s": timer.counts["frames"] / timer.seconds,
            "samples_per_s": timer.counts["samples"] / timer.seconds}


def encode_rate(model, store, frames: int, batch: int = 256) -> float:
    model.eval()
    n = min(frames, store.num_frames)
    model.encode(torch.from_numpy(store.frames(slice(0, min(batch, n)))))  # warm-up
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        model.encode(torch.from_numpy(store.frames(slice(start, min(start + batch, n)))))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="A few steps per variant (a check).")
    ap.add_argument("--data", help="Rollout store (default: collect a small one).")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/vision.md"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--variants", nargs="*", default=VARIANTS)
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    steps, warmup, enc_frames = (5, 2, 1024) if args.quick else (50, 5, 8192)

    from jepa_wm.data import RolloutStore

    tmp = None
    if args.data is None:
        from jepa_wm.data.collect import collect

        tmp = tempfile.TemporaryDirectory()
        args.data = str(Path(tmp.name) / "rollouts")
        collect("VizdoomTakeCover-v1", args.data, episodes=4 if args.quick else 24, seed=0,
                workers=1, image_size=64, progress=False)
    store = RolloutStore(args.data)
    rows = []
    for name in args.variants:
        pl.seed_everything(0, verbose=False)
        model = load_variant(name, store)
        train = (train_rate(model, store, steps, warmup, args.batch)
                 if getattr(model, "trainable", True) else None)
        enc = encode_rate(model, store, enc_frames)
        rows.append((name, train, enc))
        t = f"{train['frames_per_s']:.0f} frames/s" if train else "not trained"
        print(f"{name:<20} train {t:<18} encode {enc:.0f} frames/s", flush=True)

    cmd = "python benchmarks/vision.py " + " ".join(sys.argv[1:])
    lines = [
        "# Vision benchmark: training and encoding speed per V variant", "",
        f"Command: `{cmd.strip()}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
         f"torch {torch.__version__}, {args.threads} threads  "),
        (f"Data: {store.num_frames} VizDoom take-cover frames, 64x64; batch {args.batch}; "
         f"{steps} timed steps after {warmup} warm-up"
         + (" (--quick: a check, not a measurement)" if args.quick else "")),
        "",
        "| variant | train frames/s | train samples/s | encode frames/s |",
        "|---|---:|---:|---:|",
    ]
    for name, train, enc in rows:
        tr = (f"{train['frames_per_s']:.0f} | {train['samples_per_s']:.0f}" if train
              else "- | -")
        lines.append(f"| {name} | {tr} | {enc:.0f} |")
    lines += ["", ("A JEPA sample is a (frame, action, next frame) pair: 2 frames encoded per "
                   "sample (online + target), the VAE's 1. `random` is never trained.")]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
