"""Collection speed: frames/s of ``collect()`` for VizdoomTakeCover-v1 and CarRacing-v3 with
1 and 2 workers, the raw env step rate for reference, and bytes per stored frame.

    python benchmarks/collect.py            # full run  (~2-3 min on 2 cores)
    python benchmarks/collect.py --quick    # a check that it works (~20 s)

Prints a table and writes benchmarks/results/collect.md (command, machine, date, figures).
Run it on a quiet machine: the figures are only as good as the cores are free.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from common import results_path  # benchmarks/common.py (scripts run from their folder)

from jepa_wm.data.collect import collect
from jepa_wm.envs import make_env

#: (env id, episodes, max_episode_steps) per mode: CarRacing runs ~120 steps/s, so it gets
#: short episodes; VizDoom random episodes last ~250 steps.
CASES = {
    "full": [("VizdoomTakeCover-v1", 200, None), ("CarRacing-v3", 8, 250)],
    "quick": [("VizdoomTakeCover-v1", 16, None), ("CarRacing-v3", 2, 50)],
}


def raw_steps_per_s(env_id: str, steps: int, max_episode_steps,
                    game_state: bool = False) -> float:
    """Random-action steps/s of one ``make_env`` env in this process (resize included;
    with ``game_state``, VizDoom's labels buffer and state read as ``collect`` does)."""
    env = make_env(env_id, max_episode_steps=max_episode_steps, game_state=game_state)
    rng = np.random.default_rng(0)
    env.action_space.seed(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset(seed=int(rng.integers(2**31)))
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, gymnasium {version('gymnasium')}, "
            f"vizdoom {version('vizdoom')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Tiny budgets: a smoke check.")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id, episodes, limit in CASES[mode]:
            steps = 2000 if env_id.startswith("Vizdoom") and mode == "full" else 200
            # without and with the game state collect records, alternated 3 times (median)
            plain, with_state = [], []
            for _ in range(3):
                plain.append(raw_steps_per_s(env_id, steps, limit))
                with_state.append(raw_steps_per_s(env_id, steps, limit, game_state=True))
            raw, raw_state = float(np.median(plain)), float(np.median(with_state))
            for workers in (1, 2):
                s = collect(env_id, Path(tmp) / f"{env_id}-{workers}", episodes, seed=0,
                            workers=workers, max_episode_steps=limit, progress=False)
                rows.append((env_id, workers, episodes, s["collected_frames"], s["wall_time"],
                             s["frames_per_s"], raw, raw_state, s["bytes_per_frame"]))
                print(f"{env_id:<22} workers={workers}  {s['collected_frames']:>7,} frames  "
                      f"{s['frames_per_s']:>8,.0f} frames/s", flush=True)
    header = ("| env | workers | episodes | frames | wall s | collect frames/s | "
              "raw env steps/s (1 env) | raw, with game state | bytes/stored frame |\n"
              "|---|---|---|---|---|---|---|---|---|")
    table = "\n".join(f"| {e} | {w} | {n} | {f:,} | {t:.1f} | {fps:,.0f} | {raw:,.0f} | "
                      f"{rs:,.0f} | {b:,.0f} |" for e, w, n, f, t, fps, raw, rs, b in rows)
    command = "python benchmarks/collect.py" + (" --quick" if args.quick else "")
    report = (f"# Collection speed\n\n"
              f"- command: `{command}`\n- mode: {mode}"
              f"{' (tiny budgets: a check that the script works, not a measurement)' if args.quick else ''}\n"
              f"- machine: {machine()}\n"
              f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n\n"
              f"collect frames/s = stored frames / wall time of the whole `collect()` call "
              f"(env start-up, stepping, 64x64 area resize, writing and hashing shards); "
              f"raw env steps/s = one env stepped with random actions in one process, resize "
              f"included, median of 3 runs alternated with the same env recording the game "
              f"state (VizDoom's labels buffer and game variables, what `collect` stores for "
              f"the probes; other envs have none, so the two agree up to noise). Frames are "
              f"uint8 3x64x64 (12,288 bytes) plus action, reward, flags and, on VizDoom, 6 "
              f"float32 game-state values.\n\n{header}\n{table}\n")
    out = results_path("collect", args.quick)  # --quick never overwrites collect.md
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print("\n" + header + "\n" + table + f"\n\nwrote {out}")


if __name__ == "__main__":
    sys.exit(main())
