"""The VAE's training step in fp32, channels_last and bf16 (issue 14): frames/s per mode and
the forward+backward time of each conv layer, so a precision or layout change is measured
before it is adopted.

    python benchmarks/vision_precision.py [--batch 64] [--steps 30] [--threads 2] [--quick]

Every mode trains the real ``VAEModule`` (Ha's ConvVAE, z 32, fused Adam) on random 64x64
frames for ``--steps`` steps after 5 warm-up steps, all in this process. bf16 is
``torch.autocast("cpu", torch.bfloat16)`` (weights stay fp32). Writes
``benchmarks/results/vision_precision.md`` (``--quick``: ``vision_precision_quick.md``).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

import torch
from common import cpu_name, loadavg, results_path  # benchmarks/common.py
from torch import nn

from jepa_wm.vision.vae import VAEModule

MODES = {"fp32": {}, "fp32 channels_last": {"cl": True}, "bf16 autocast": {"amp": True},
         "bf16 autocast + channels_last": {"amp": True, "cl": True}}


def timed(fn, steps: int, warmup: int = 3) -> float:
    """Mean seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def vae_step_seconds(batch: int, steps: int, cl: bool = False, amp: bool = False) -> float:
    torch.manual_seed(0)
    model = VAEModule(latent_dim=32)
    x = torch.rand(batch, 3, 64, 64)
    if cl:
        model, x = model.to(memory_format=torch.channels_last), \
            x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model.losses(x)["loss"]
        loss.backward()
        opt.step()

    return timed(step, steps, warmup=5)


def layer_ms(batch: int, steps: int) -> list[tuple[str, float, float, float]]:
    """(layer, fp32 ms, channels_last ms, bf16 + channels_last ms) of forward + backward."""
    layers = [(f"conv {i}->{o} on {s}x{s}", nn.Conv2d(i, o, 4, stride=2), s)
              for i, o, s in ((3, 32, 64), (32, 64, 31), (64, 128, 14), (128, 256, 6))]
    layers += [(f"deconv {i}->{o} k{k} on {s}x{s}", nn.ConvTranspose2d(i, o, k, stride=2), s)
               for i, o, k, s in ((128, 64, 5, 5), (64, 32, 6, 13), (32, 3, 6, 30))]
    rows = []
    for name, layer, size in layers:
        x = torch.randn(batch, layer.in_channels, size, size)
        times = []
        for cl, amp in ((False, False), (True, False), (True, True)):
            lay = layer.to(memory_format=torch.channels_last) if cl else layer
            xx = (x.contiguous(memory_format=torch.channels_last) if cl else x.clone()
                  ).requires_grad_(layer.in_channels != 3)

            def fb(lay=lay, xx=xx, amp=amp) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    y = lay(xx)
                y.float().sum().backward()

            times.append(1000 * timed(fb, steps))
        rows.append((name, *times))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 steps per mode (a check).")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    steps = 3 if args.quick else args.steps
    torch.set_num_threads(args.threads)
    load_before = loadavg()
    modes = []
    for name, mode in MODES.items():
        seconds = vae_step_seconds(args.batch, steps, **mode)
        modes.append((name, seconds))
        print(f"{name:32s} {seconds * 1000:7.1f} ms/step {args.batch / seconds:6.0f} frames/s",
              flush=True)
    layers = layer_ms(args.batch, max(3, steps // 2))
    lines = ["# VAE training step: precision and memory layout (issue 14)", "",
             (f"- command: `python benchmarks/vision_precision.py --batch {args.batch} --steps "
             f"{args.steps} --threads {args.threads}{' --quick' if args.quick else ''}`"),
             (f"- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_name()}; torch "
             f"{torch.__version__}; {args.threads} threads; load {load_before} before, "
             f"{loadavg()} after"),
             (f"- real `VAEModule` (z 32, fused Adam), random 64x64 frames, batch {args.batch}, "
             f"{steps} timed steps after 5 warm-up; bf16 = `torch.autocast('cpu', bfloat16)`"),
             "", "| mode | ms / step | frames / s | vs fp32 |", "|---|---:|---:|---:|"]
    base = modes[0][1]
    lines += [f"| {n} | {s * 1000:.1f} | {args.batch / s:.0f} | {base / s:.2f}x |"
              for n, s in modes]
    lines += ["", "Forward + backward of each layer alone (ms):", "",
              "| layer | fp32 | channels_last | bf16 + channels_last |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {a:.1f} | {b:.1f} | {c:.1f} |" for n, a, b, c in layers]
    text = "\n".join(lines) + "\n"
    out = results_path("vision_precision", args.quick, args.out)
    out.write_text(text)
    print(text + f"\nwrote {out}")


if __name__ == "__main__":
    main()
