"""Memory benchmark: MDN-RNN (M) training speed at the sizes of the experiment configs.

    python benchmarks/memory.py [--quick] [--threads 2] [--out benchmarks/results/memory.md]
    python benchmarks/memory.py --experiments ladder/m512_shared_h30 \
        --precision 32-true bf16-mixed --out benchmarks/results/memory_precision.md

For each experiment (``doom_fast``: LSTM 256, z 32, windows of 32 steps, batch 32;
``doom_takecover``: LSTM 512, z 64, windows of 64, batch 64; K = 5 Gaussians per latent
dimension in both; sizes read from ``configs/experiments/<name>.yaml``) it trains
``MDNRNNModule`` with a Lightning Trainer on synthetic standard-normal latents and
VizDoom take-cover's 3 discrete actions, and times each optimiser step (forward over the
window, mixture NLL + reward + done losses, backward, gradient clipping, Adam) after
warm-up steps, data loading excluded. M's cost does not depend on the latents' values,
so synthetic windows measure the same work as real ones.

``ladder/<rung>`` names a ladder rung (``configs/ladder/<rung>.yaml`` over ``doom_fast``,
as ``benchmarks/ladder.py`` runs it): ``ladder/m512_shared_h30`` is the solving budget's
M (LSTM 512, z 32, 16 lanes x 500 steps, one mixture per z). ``--precision`` times each
size at each Lightning precision (``32-true``, ``bf16-mixed``: autocast, which on a CPU
with AMX runs the LSTM's and the head's matmuls in bf16 through oneDNN).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import gymnasium as gym
import pytorch_lightning as pl
import torch
from common import (  # benchmarks/common.py (scripts run from their folder)
    StepTimer,
    cpu_name,
    loadavg,
    results_path,
)
from torch.utils.data import DataLoader, Dataset

from jepa_wm.envs import ActionSpace

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["doom_fast", "doom_takecover"]
#: VizDoom take-cover's action space (left, right, stay), as M receives it.
ACTION = ActionSpace(gym.spaces.Discrete(3)).to_dict()


class SyntheticWindows(Dataset):
    """Windows shaped as ``WindowDataset(store, seq_len, source=z)`` gives them:
    ``z`` ``(T+1, D)`` float32, ``a`` ``(T+1,)`` int64 actions, ``r``/``done`` ``(T+1,)``
    float32, ``mask`` ``(T+1,)`` bool, with a death at a random step of 1 in 10 windows."""

    def __init__(self, n: int, seq_len: int, latent_dim: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        L = seq_len + 1
        self.z = torch.randn(n, L, latent_dim, generator=g)
        self.a = torch.randint(0, ACTION["n"], (n, L), generator=g)
        self.r = torch.ones(n, L)
        self.done = torch.zeros(n, L)
        dead = torch.nonzero(torch.rand(n, generator=g) < 0.1).flatten()
        self.done[dead, torch.randint(0, L, (len(dead),), generator=g)] = 1.0
        self.mask = torch.ones(n, L, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"z": self.z[i], "a": self.a[i], "r": self.r[i], "done": self.done[i],
                "mask": self.mask[i]}


def sizes(name: str) -> dict:
    """M's sizes and batch of an experiment config (what ``train-memory`` would build)."""
    from jepa_wm.config import experiment_parser, to_dict

    files = [ROOT / "configs/experiments/doom_fast.yaml", ROOT / f"configs/{name}.yaml"] \
        if name.startswith("ladder/") else [ROOT / f"configs/experiments/{name}.yaml"]
    cfg = experiment_parser().parse_args([a for f in files for a in ("--config", str(f))])
    args = to_dict(cfg.memory_model)["init_args"]
    return {"hidden_size": args["hidden_size"], "num_mixtures": args["num_mixtures"],
            "seq_len": args["seq_len"], "lr": args.get("lr", 1e-3),
            "shared_mixture": bool(args.get("shared_mixture", False)),
            "latent_dim": to_dict(cfg.vision_model)["init_args"]["latent_dim"],
            "batch_size": cfg.memory_train.batch_size}


def train_rate(size: dict, steps: int, warmup: int, precision: str = "32-true") -> dict:
    """Steps/s, sequences/s and transitions/s of ``MDNRNNModule`` training at ``size``
    and Lightning ``precision``."""
    from jepa_wm.memory import MDNRNNModule

    pl.seed_everything(0, verbose=False)
    module = MDNRNNModule(latent_dim=size["latent_dim"], action=ACTION,
                          hidden_size=size["hidden_size"], num_mixtures=size["num_mixtures"],
                          seq_len=size["seq_len"], lr=size["lr"],
                          shared_mixture=size["shared_mixture"])
    data = SyntheticWindows((steps + warmup) * size["batch_size"], size["seq_len"],
                            size["latent_dim"])
    timer = StepTimer(warmup, lambda batch: {"sequences": batch["z"].shape[0]})
    trainer = pl.Trainer(max_steps=steps + warmup, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[timer], precision=precision)
    trainer.fit(module, DataLoader(data, batch_size=size["batch_size"], shuffle=True,
                                   drop_last=True))
    sps = timer.steps / timer.seconds
    sequences = timer.counts["sequences"]
    return {"steps_per_s": sps, "sequences_per_s": sequences / timer.seconds,
            "transitions_per_s": sequences * size["seq_len"] / timer.seconds,
            "ms_per_step": 1e3 / sps}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="A few steps per size (a check).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--experiments", nargs="*", default=EXPERIMENTS,
                    help="Experiment configs, or ladder/<rung> (over doom_fast).")
    ap.add_argument("--precision", nargs="*", default=["32-true"],
                    help="Lightning precisions to time each size at.")
    ap.add_argument("--out", default=None,
                    help="Results file (default results/memory.md; --quick: memory_quick.md).")
    args = ap.parse_args()
    args.out = str(results_path("memory", args.quick, args.out))
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    steps, warmup = (5, 2) if args.quick else (40, 5)
    load_before, started = loadavg(), datetime.now(timezone.utc)
    rows = []
    for name in args.experiments:
        for precision in args.precision:
            size = sizes(name)
            rate = train_rate(size, steps, warmup, precision)
            rows.append((name, precision, size, rate))
            print(f"{name:<16} {precision:<10} H {size['hidden_size']:<4} D "
                  f"{size['latent_dim']:<3} T {size['seq_len']:<3} B {size['batch_size']:<3} "
                  f"{rate['steps_per_s']:.1f} "
                  f"steps/s  {rate['sequences_per_s']:.0f} sequences/s  "
                  f"{rate['transitions_per_s']:.0f} transitions/s", flush=True)
    load_after = loadavg()

    cmd = "python benchmarks/memory.py " + " ".join(sys.argv[1:])
    lines = [
        "# Memory benchmark: MDN-RNN training speed", "",
        f"Command: `{cmd.strip()}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC  ",
        (f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, "
         f"torch {torch.__version__}, {args.threads} torch threads, OMP_WAIT_POLICY "
         f"{os.environ.get('OMP_WAIT_POLICY') or 'unset'}  "),
        (f"Load average (1/5/15 min): before {load_before}, after {load_after} "
         "(other jobs were sharing the cores when the load is above ~0.5)  "),
        (f"Timing: {steps} optimiser steps after {warmup} warm-up, forward + losses + "
         "backward + clip + Adam, data loading excluded; synthetic standard-normal latents, "
         "3 discrete actions" + (" (--quick: a check, not a measurement)" if args.quick
                                 else "")),
        "",
        ("| experiment | precision | LSTM units | K | z dim | seq_len | batch | steps/s | "
         "ms/step | sequences/s | transitions/s |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, precision, s, r in rows:
        lines.append(f"| {name} | {precision} | {s['hidden_size']} | {s['num_mixtures']} | "
                     f"{s['latent_dim']} | {s['seq_len']} | {s['batch_size']} | "
                     f"{r['steps_per_s']:.1f} | {r['ms_per_step']:.0f} | "
                     f"{r['sequences_per_s']:.0f} | {r['transitions_per_s']:.0f} |")
    lines += ["", ("A sequence is one training window of seq_len transitions (seq_len + 1 "
                   "latents); transitions/s = sequences/s x seq_len.")]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
