"""Memory scaling benchmark: peak RSS of ``train-vision`` against the rollout store's size.

    python benchmarks/memory_scaling.py [--quick] [--source STORE] [--small 50000]
        [--large 500000] [--steps 100] [--workdir /tmp] [--out benchmarks/results/memory_scaling.md]

Builds two stores of ``--small`` and ``--large`` frames by repeating the episodes of a real
store (``--source``; without it a small VizDoom store is collected first) with
``RolloutWriter``, then trains the ``doom_fast`` VAE for ``--steps`` optimiser steps at
batch 64 on each, every run in a fresh ``jepa_wm.cli train-vision`` subprocess whose peak
resident set is read from ``os.wait4`` (``ru_maxrss``: the child alone, memory-mapped
store pages it touched included). The store is memory-mapped, never loaded, so the goal
is a peak that does not grow with the store: within 1.2x between the two sizes and under
3 GB. The built stores live in a temporary folder under ``--workdir`` and are deleted at
the end (500k frames are ~6 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import (  # benchmarks/common.py (scripts run from their folder)
    cpu_name,
    loadavg,
    results_path,
)

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.2
TARGET_BYTES = 3 * 1024 ** 3


def build_store(source, root: Path, frames: int) -> dict:
    """A store at ``root`` holding at least ``frames`` frames: the episodes of ``source``
    (a ``RolloutStore``) repeated in order, in shards of the source's episodes per shard."""
    from jepa_wm.data.store import FRAME_ARRAYS, IDENTITY_KEYS, RolloutWriter

    writer = RolloutWriter(root, {k: source.meta[k] for k in IDENTITY_KEYS})
    per_shard = int(source.meta["episodes_per_shard"])
    e, t0 = 0, time.time()
    while writer.num_frames < frames:
        shard, n = [], writer.num_frames
        while len(shard) < per_shard and n < frames:
            ep = source.episode(e % source.num_episodes)
            shard.append({k: ep[k] for k in FRAME_ARRAYS})
            n += len(ep["rewards"])
            e += 1
        writer.write_shard(shard)
    nbytes = sum(f.stat().st_size for f in root.glob("shard-*/*.npy"))
    return {"frames": writer.num_frames, "episodes": writer.num_episodes, "bytes": nbytes,
            "build_s": time.time() - t0}


#: The child: ``jepa_wm.cli`` as ``python -m`` runs it, writing its resident memory at exit
#: split into anonymous (Python, torch, batches) and file-backed (shared libraries and the
#: store pages it mapped) to the file named by JEPA_WM_STATUS_FILE.
CHILD = """
import atexit, json, os, runpy, sys
def status():
    kb = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in
          open("/proc/self/status")) if k in ("VmHWM", "RssAnon", "RssFile")}
    with open(os.environ["JEPA_WM_STATUS_FILE"], "w") as f:
        json.dump(kb, f)
atexit.register(status)
sys.argv[0] = "jepa_wm.cli"
runpy.run_module("jepa_wm.cli", run_name="__main__", alter_sys=True)
"""


def peak_rss(store: Path, out: Path, steps: int, threads: int) -> dict:
    """Train the doom_fast VAE for ``steps`` steps on ``store`` in a fresh subprocess;
    its peak RSS (bytes) and wall time."""
    cmd = [sys.executable, "-c", CHILD, "train-vision",
           "--config", str(ROOT / "configs/experiments/doom_fast.yaml"),
           "--config", str(ROOT / "configs/variants/vae.yaml"),
           "--data", str(store), "--out", str(out),
           "--vision_train.max_steps", str(steps), "--vision_train.max_epochs", "1",
           "--vision_train.batch_size", "64", "--vision_train.threads", str(threads)]
    status_file = out.parent / f"{out.name}-status.json"
    env = {**os.environ, "WANDB_MODE": "disabled", "JEPA_WM_STATUS_FILE": str(status_file)}
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not earlier ones'
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"train-vision failed on {store}:\n{output[-3000:]}")
    steps_done = json.loads((out / "metrics.json").read_text())["steps"]
    status = json.loads(status_file.read_text())
    return {"peak_rss": usage.ru_maxrss * 1024, "wall_s": time.time() - t0,
            "steps": steps_done, "anon_exit": status["RssAnon"], "file_exit": status["RssFile"]}


def source_store(path: str | None, tmp: Path):
    from jepa_wm.data import RolloutStore

    if path is None:
        from jepa_wm.data.collect import collect

        path = str(tmp / "source")
        collect("VizdoomTakeCover-v1", path, episodes=8, seed=0, workers=1, image_size=64,
                progress=False)
    return RolloutStore(path)




NOTE = ("Anonymous memory is the Python heap, torch and the batches; file-backed memory is "
        "the shared libraries (~0.4 GiB) plus the store pages the run mapped. Linux maps a whole "
        "page-cache folio on a fault, so reading a 12 KB frame through the memory map can map "
        "hundreds of KB of the store when the store sits in the page cache in large folios "
        "(e.g. just after it was written); that part depends on the page cache, not on the "
        "store's size.")


def gib(n: float) -> str:
    return f"{n / 1024 ** 3:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="5k against 50k frames, 20 steps (a check, not a measurement).")
    ap.add_argument("--source", help="Real rollout store whose episodes are repeated.")
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--large", type=int, default=500_000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp", help="Where the stores are built.")
    ap.add_argument("--out", default=None, help="Results file (default "
                    "results/memory_scaling.md; --quick: memory_scaling_quick.md).")
    args = ap.parse_args()
    args.out = str(results_path("memory_scaling", args.quick, args.out))
    if args.quick:
        args.small, args.large, args.steps = 5_000, 50_000, 20
    started, load_before = datetime.now(timezone.utc), loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="jepa_wm-memscale-", dir=args.workdir))
    rows = []
    try:
        source = source_store(args.source, tmp)
        for frames in (args.small, args.large):
            store = tmp / f"store-{frames}"
            built = build_store(source, store, frames)
            print(f"built {store}: {built['frames']} frames, {gib(built['bytes'])} in "
                  f"{built['build_s']:.0f} s", flush=True)
            run = peak_rss(store, tmp / f"vision-{frames}", args.steps, args.threads)
            rows.append({**built, **run})
            print(f"{built['frames']:>9} frames: peak RSS {gib(run['peak_rss'])}, "
                  f"{run['steps']} steps in {run['wall_s']:.0f} s", flush=True)
            shutil.rmtree(store)  # the large one is ~6 GB: never keep two at once
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = loadavg()

    ratio = rows[1]["peak_rss"] / rows[0]["peak_rss"]
    peak = max(r["peak_rss"] for r in rows)
    flat, under = ratio <= TARGET_RATIO, peak < TARGET_BYTES
    verdict = "met" if flat and under else "missed"
    cmd = "python benchmarks/memory_scaling.py " + " ".join(sys.argv[1:])
    lines = [
        "# Memory scaling: peak RSS of train-vision against the store's size", "",
        f"Command: `{cmd.strip()}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC  ",
        (f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
         f"{args.threads} torch threads  "),
        (f"Load average (1/5/15 min): before {load_before}, after {load_after} (peak RSS "
         "does not depend on load; the wall times do)  "),
        (f"Run: `jepa_wm.cli train-vision` with doom_fast + vae (ConvVAE, z 32), batch 64, "
         f"{args.steps} steps, each in a fresh subprocess; peak RSS = the child's "
         "`ru_maxrss` from `os.wait4` (memory-mapped store pages it read count in it)  "),
        (f"Stores: the {source.num_episodes} episodes ({source.num_frames} frames) of a real "
         "VizDoom take-cover store repeated, written with `RolloutWriter`"
         + (" (--quick: a check, not a measurement)" if args.quick else "")),
        "",
        ("| store frames | episodes | store size | train steps | wall s | peak RSS | "
         "at exit: anonymous | at exit: file-backed |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['frames']:,} | {r['episodes']:,} | {gib(r['bytes'])} | "
                     f"{r['steps']} | {r['wall_s']:.0f} | {gib(r['peak_rss'])} | "
                     f"{gib(r['anon_exit'])} | {gib(r['file_exit'])} |")
    misses = ([f"ratio over by {ratio - TARGET_RATIO:.3f}"] if not flat else []) + \
        ([f"peak over by {gib(peak - TARGET_BYTES)}"] if not under else [])
    lines += ["", f"Ratio large / small: **{ratio:.3f}** (target <= {TARGET_RATIO}); largest "
                  f"peak {gib(peak)} (target < 3 GiB). Target **{verdict}**"
                  + (f": {', '.join(misses)}." if misses else "."), "", NOTE]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(lines[-3])  # the ratio and the verdict
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
