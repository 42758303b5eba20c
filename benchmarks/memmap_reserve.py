"""What reserving a memory-mapped file's blocks costs (``jepa_wm.io.new_memmap``, which
calls ``posix_fallocate`` so that a full disk is an ENOSPC error, not a SIGBUS).

    python benchmarks/memmap_reserve.py [--frames 20000] [--repeats 3] [--dir DIR]

Writes a rollout shard of ``--frames`` random 64x64 frames (``RolloutWriter.write_shard``:
memory-mapped arrays, sha256 of every file, the rename) and a latent set of the same
number of rows (``write_latents``, z 32 with sigma) into ``--dir``, alternating the real
``new_memmap`` with one whose reservation is switched off, and prints seconds per write.
Writes ``benchmarks/results/memmap_reserve.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from common import cpu_name, loadavg, results_path


def write_shard(root: Path, frames: np.ndarray) -> None:
    import gymnasium as gym

    from jepa_wm.data.store import RolloutWriter, space_to_dict

    n = len(frames)
    writer = RolloutWriter(root, {
        "env_id": "Bench-v0", "image_size": frames.shape[-1], "frame_skip": 1,
        "max_episode_steps": None, "seed": 0, "policy": "bench", "episodes_per_shard": 1,
        "env_kwargs": {}, "action_space": space_to_dict(gym.spaces.Discrete(3)),
        "observation_space": space_to_dict(gym.spaces.Box(0, 255, frames.shape[1:],
                                                          np.uint8))})
    writer.write_shard([{"frames": frames, "actions": np.zeros(n, np.int64),
                         "rewards": np.ones(n, np.float32), "terminated": np.zeros(n, bool),
                         "truncated": np.zeros(n, bool)}])


def write_z(root: Path, rows: int) -> None:
    from jepa_wm.data.latents import write_latents

    rng = np.random.default_rng(0)
    batches = ((rng.standard_normal((1000, 32), np.float32),
                rng.random((1000, 32), np.float32)) for _ in range(rows // 1000))
    write_latents(root, rows // 1000 * 1000, 32, batches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None,
                        help="Where the files are written (default: a temporary folder).")
    parser.add_argument("--out", type=Path, default=None, help="Results file.")
    args = parser.parse_args()
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, 3, 64, 64), np.uint8)
    real = os.posix_fallocate
    times: dict[str, dict[str, list[float]]] = {m: {"shard": [], "latents": []}
                                                for m in ("reserved", "sparse")}
    load = loadavg()
    base = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        for r in range(args.repeats):
            for mode in ("sparse", "reserved") if r % 2 else ("reserved", "sparse"):
                os.posix_fallocate = real if mode == "reserved" else (lambda fd, o, n: None)
                try:
                    for kind, fn in (("shard", lambda d: write_shard(d, frames)),
                                     ("latents", lambda d: write_z(d, args.frames))):
                        folder = base / f"{mode}-{kind}-{r}"
                        t0 = time.perf_counter()
                        fn(folder)
                        times[mode][kind].append(time.perf_counter() - t0)
                        shutil.rmtree(folder)
                finally:
                    os.posix_fallocate = real
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = ["| write | sparse (no reservation) s | reserved s | reserved / sparse |",
            "|---|---|---|---:|"]
    for kind, what in (("shard", (f"rollout shard, {args.frames:,} frames "
                                 f"({args.frames * 12288 / 2**20:.0f} MiB)")),
                       ("latents", f"latent set, {args.frames:,} x 32 z + sigma")):
        s, r_ = times["sparse"][kind], times["reserved"][kind]
        rows.append(f"| {what} | {', '.join(f'{x:.3f}' for x in s)} | "
                    f"{', '.join(f'{x:.3f}' for x in r_)} | {min(r_) / min(s):.2f} |")
    text = "\n".join([
        "# Reserving memory-mapped files' blocks (`jepa_wm.io.new_memmap`)", "",
        (f"- command: `python benchmarks/memmap_reserve.py --frames {args.frames} --repeats "
        f"{args.repeats}{f' --dir {args.dir}' if args.dir else ''}`"),
        (f"- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}, "
        f"{os.cpu_count()} CPUs; load {load} before, {loadavg()} after"),
        ("- each write timed whole (files, sha256 sums, rename); the two modes alternate; "
        "the ratio is of the fastest of each"), "", *rows, ""])
    path = results_path("memmap_reserve", False, args.out)
    path.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
