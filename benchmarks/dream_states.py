"""Where does C go in its dream, and what does the dream show it there, against the game?

    python benchmarks/dream_states.py RUN [RUN ...] [--episodes 10] [--dreams 256]

C's dream survival runs 1.3-2x its real one on the h30 runs although M is calibrated for
the data policy. ``evaluate`` splits that gap per step into M's death head on C's real
states (game deaths / M's hazard there) and the dream's own trajectories (M's hazard on
the real states / dream deaths). This looks at the second factor through V's linear
probes: ridge maps from z (standardised and sampled, as M sees it) to the player's strafe
position (``player_y``) and the number of fireballs in view, fitted on the run's rollout
store (its recorded game state), then read on the z of C's real episodes (beside the true
values) and on the z of C's dreams. A dream that shows C fewer fireballs than the game at
the same places, or lets it stand where the game would not, is the hole CMA-ES found.

Real episodes: env seeds 2,000,000 + i, one env, V, M and C in the loop
(``behaviour.real_behaviour``); dreams: C's own at the training settings
(``behaviour.dream_behaviour``). Appends a row per run to
``benchmarks/results/dream_states.md``.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from behaviour import ROOT, dream_behaviour, load, real_behaviour
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)

RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ("player_y", "fireballs")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Frames of the store the probes are fitted on (spread evenly), and of the dreams read.
MAX_FRAMES = 200_000
#: A step M rates above this hazard is a death it sees coming (a fireball hitting).
SHARP = 0.1


def fit_probes(memory, latents, store) -> dict[str, np.ndarray]:
    """Ridge weights (bias last) from M's standardised sampled z to each target, fitted on
    up to ``MAX_FRAMES`` frames of the store; the strength chosen on its last fifth."""
    from jepa_wm.probes import fit_ridge

    names = list(store.state_names)
    idx = np.unique(np.linspace(0, store.num_frames - 1,
                                min(MAX_FRAMES, store.num_frames)).astype(np.int64))
    z = latents.sample(idx, np.random.default_rng(0))
    with torch.no_grad():
        x = memory.standardise(torch.as_tensor(z)).numpy().astype(np.float64)
    state = np.asarray(store.get("state", slice(None)))[idx]
    inner = np.arange(len(idx)) >= int(0.8 * len(idx))
    out = {}
    for name in TARGETS:
        y = state[:, names.index(name)].astype(np.float64)
        rows = np.isfinite(y)
        out[name], _ = fit_ridge(x[rows], y[rows], inner[rows])
    return out


def read(w: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.asarray(z, np.float64) @ w[:-1] + w[-1]


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def fmt_q(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    return "/".join(f"{q:.0f}" for q in np.quantile(values, QUANTILES)) if len(values) else "—"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--dreams", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULTS / "dream_states.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    if not args.out.exists():
        args.out.write_text(
            "# Where C goes in its dream and in the game (`benchmarks/dream_states.py`)\n\n"
            "Per run: C's real episodes (env seeds 2,000,000 + i) and 256 of its dreams. "
            "Deaths per 1,000 steps: in the game, M's hazard summed on those real steps, "
            "and in the dreams (a dream that ran to the step limit did not die). Strafe "
            "position `player_y` (walls at 16 and 752, start 384) as 5/25/50/75/95% "
            "quantiles: the game's own, and V's linear probe of it read on the real z and "
            "on the dream z; fireballs in view per step: the game's mean, the probe's on "
            "the real z, the probe's on the dream z. The probes are ridge maps from z (as "
            "M sees it) fitted on the run's rollout store (random play); a probe's bias on "
            "C's real states shows in real-true against real-probe, so compare dream-probe "
            "with real-probe. Where M's hazard mass sits: the share of it on steps M rates "
            "above 0.1 (a fireball hitting), in the game (teacher-forced on C's real steps) "
            "and in the dreams; and the mean hazard on the step each death happened.\n\n"
            "| run | real eps / mean length | dreams / mean length | deaths per 1k: game / "
            "M's hazard there / dream | y: game | y: probe on real z | y: probe on dream z |"
            " fireballs: game / probe real / probe dream | hazard mass at p > 0.1: game / "
            "dream | hazard on the death step: game / dream | written |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    for run in args.runs:
        run = run.resolve()
        cfg, memory, vision, latents, store, controller = load(run, None)
        probes = fit_probes(memory, latents, store)
        real = real_behaviour(cfg, vision, memory, controller, args.episodes)
        dream = dream_behaviour(cfg, memory, latents, store, controller, args.dreams)
        names = list(real["state_names"])
        steps = real["lengths"].sum()
        dream_steps = dream["lengths"].sum()
        rates = (1e3 * real["died"].sum() / steps, 1e3 * real["hazard"].sum() / steps,
                 1e3 * (dream["lengths"] < dream["max_steps"]).sum() / dream_steps)
        dz = dream["z"]
        if len(dz) > MAX_FRAMES:
            dz = dz[np.linspace(0, len(dz) - 1, MAX_FRAMES).astype(np.int64)]
        y_true = real["state"][:, names.index("player_y")]
        f_true = real["state"][:, names.index("fireballs")]
        f_real, f_dream = read(probes["fireballs"], real["z"]), read(probes["fireballs"], dz)
        # where M's hazard mass sits: on states it rates near-certain death (a fireball
        # hitting), or spread thin; and the hazard on the step each death happened
        sharp = (real["hazard"][real["hazard"] > SHARP].sum() / real["hazard"].sum(),
                 dream["hazard"][dream["hazard"] > SHARP].sum() / dream["hazard"].sum())
        real_last = real["hazard"][np.cumsum(real["lengths"]) - 1][real["died"]]
        dream_last = dream["last_hazard"][dream["lengths"] < dream["max_steps"]]
        row = (f"| {'/'.join(run.parts[-3:])} | {args.episodes} / {real['length_mean']:.0f} | "
               f"{args.dreams} / {dream['length_mean']:.0f} | "
               + " / ".join(f"{r:.2f}" for r in rates) + " | "
               f"{fmt_q(y_true)} | {fmt_q(read(probes['player_y'], real['z']))} | "
               f"{fmt_q(read(probes['player_y'], dz))} | "
               f"{np.nanmean(f_true):.2f} / {f_real.mean():.2f} / {f_dream.mean():.2f} | "
               f"{sharp[0]:.2f} / {sharp[1]:.2f} | "
               f"{_mean(real_last):.3f} / {_mean(dream_last):.3f} | "
               f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
               f"load {loadavg()} |")
        with open(args.out, "a") as f:
            f.write(row + "\n")
        print(row, flush=True)


if __name__ == "__main__":
    main()
