"""The policies every transfer table is read against, on the fixed evaluation seeds a
controller's ``evaluate`` uses: uniform random play (a new action every step) and the data
policies (a uniform random action held 1..max_hold steps: 1..10 is Ha & Schmidhuber's Doom
data, 1..30 the ``max_hold: 30`` rungs').

    python benchmarks/baselines.py [--seeds 0 1 2 3 4] [--episodes 50] [--holds 1 10 30]

Plays the real env (``jepa_wm.envs.make_env``, the evaluation's seeds
``jepa_wm.controller.evaluate.eval_seeds(seed, episodes)``) and writes
``benchmarks/results/baselines_seeds<S>.md`` (e.g. ``baselines_seeds0-4.md``) with the
command, date and machine.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)

from jepa_wm.controller.evaluate import eval_seeds
from jepa_wm.data.collect import HoldRandomPolicy
from jepa_wm.envs import EnvSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ENV = EnvSettings("VizdoomTakeCover-v1", image_size=64, max_episode_steps=2100)


def play(max_hold: int, seeds: np.ndarray, settings: EnvSettings = ENV) -> np.ndarray:
    """Returns of one episode per seed of the held-random policy (``max_hold`` 1 = uniform
    random play) in the env of ``settings``; the policy's stream of episode i is seeded by
    (seeds[0], i)."""
    env = settings.factory()()
    policy = HoldRandomPolicy(env.action_space, seed=int(seeds[0]), max_hold=max_hold)
    policy.reset(1)
    returns = []
    try:
        for i, seed in enumerate(seeds):
            obs, _ = env.reset(seed=int(seed))
            policy.start_episode(0, i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy.act(obs[None])[0])
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return np.asarray(returns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="Run seeds whose evaluation seeds are played.")
    parser.add_argument("--episodes", type=int, default=50, help="Episodes per run seed.")
    parser.add_argument("--holds", type=int, nargs="+", default=[1, 10, 30],
                        help="Longest holds of the random policies played (1 = uniform).")
    args = parser.parse_args()
    seeds = np.concatenate([eval_seeds(s, args.episodes) for s in args.seeds])
    run_seeds = " ".join(map(str, args.seeds))
    load, start = loadavg(), time.perf_counter()
    rows = []
    for hold in args.holds:
        name = ("uniform random (a new action every step)" if hold == 1 else
                f"data policy (random action held 1..{hold} steps)")
        r = play(hold, seeds)
        rows.append(f"| {name} | {r.mean():.1f} ± {r.std():.1f} | {np.median(r):.0f} | "
                    f"{r.min():.0f}-{r.max():.0f} |")
    text = "\n".join([
        f"# Baselines on the evaluation seeds of run seeds {run_seeds}", "",
        (f"- command: `python benchmarks/baselines.py --seeds {run_seeds} --episodes "
        f"{args.episodes} --holds {' '.join(map(str, args.holds))}`"),
        (f"- env {ENV.env}, 64x64, episodes capped at 2100 steps; {len(seeds)} episodes, the "
        f"seeds `evaluate` plays (`eval_seeds(s, {args.episodes})` for s in {run_seeds})"),
        (f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {cpu_name()}, "
        f"{os.cpu_count()} CPUs; {time.perf_counter() - start:.0f} s; load {load} before"),
        "", "| policy | real score (mean ± std) | median | range |", "|---|---:|---:|---:|",
        *rows])
    name = "-".join(map(str, args.seeds)) if len(args.seeds) < 3 or args.seeds != list(
        range(args.seeds[0], args.seeds[-1] + 1)) else f"{args.seeds[0]}-{args.seeds[-1]}"
    (RESULTS / f"baselines_seeds{name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
