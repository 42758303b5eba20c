"""Where does M put its deaths? M's hazard against the game's deaths, by game state.

    python benchmarks/hazard_states.py RUN [RUN ...]     # RUN: a run's cell folder

A death head can be calibrated on the whole (about one death per held-out episode) and
still put its deaths in the wrong places: spread over the episode instead of on the steps
where a fireball hits (the JEPA's M's on the h30 ladder: `fidelity.json`'s
`hazard_early` / `hazard_last2`). This splits it by what the game recorded at each step of
M's held-out episodes (the store's game state, random play): the nearest fireball's
distance (none in view, touching, near, ..., far) and the player's health. Per bin: the
share of the steps, the game's deaths per 1,000 steps, M's teacher-forced hazard per 1,000
steps (as the fidelity stage feeds it: z sampled, LSTM from a zero state at each episode's
start), and their ratio: a faithful head has M / game near 1 in every bin; a blurry one is
above 1 where nothing hits and below 1 where fireballs do. And per run, the average
precision of M's hazard for the steps that end in a death (chance: their share; beside
the probe stage's `death_next`, the same question asked of z alone). Appends one section per call
to ``benchmarks/results/hazard_states.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from common import RESULTS, append_record, cpu_name, loadavg
from ladder import _f

from jepa_wm.envs.vizdoom import TOUCHING

#: Nearest fireball's distance (map units; the first edge is where one touches the player,
#: ``jepa_wm.envs.vizdoom.TOUCHING``): bin edges, and the bins' names.
DIST_EDGES = (TOUCHING, 100.0, 200.0, 350.0)
DIST_NAMES = (f"touching (< {TOUCHING:g})", f"{TOUCHING:g}-100", "100-200", "200-350", "350+")
#: The player's health: full, or below (a hit taken).
HEALTH_EDGES = (60.0, 100.0)
HEALTH_NAMES = ("< 60", "60-99", "100")


def load(run: Path):
    """M (round 0's), its latents and store, and its held-out episodes."""
    from jsonargparse import Namespace

    from jepa_wm.stages.train_controller import load_parts

    memory, _, latents, store = load_parts(Namespace(
        latents=run / "latents", memory=run / "memory" / "final.ckpt", vision=None, data=None))
    episodes = memory.extra.get("val_episodes")
    if not episodes:
        raise SystemExit(f"hazard_states: {run}: its M has no held-out episodes")
    if not store.state_names:
        raise SystemExit(f"hazard_states: {run}: its store records no game state")
    return memory, latents, store, np.asarray(episodes)


def per_step(run: Path, seed: int) -> dict[str, np.ndarray]:
    """Flat arrays over the held-out episodes' steps: M's hazard, the game's death (1 on a
    terminating step), the nearest fireball's distance (NaN: none in view), health."""
    from jepa_wm.controller import single_thread
    from jepa_wm.fidelity import episode_batch, teacher_forced

    memory, latents, store, episodes = load(run)
    batch = episode_batch(memory, latents, store, episodes, seed)
    with single_thread():
        hazard = teacher_forced(memory, batch)["hazard"]
    valid = batch["valid"].numpy()
    state = store.get("state", batch["rows"].numpy()[valid])
    names = list(store.state_names)
    return {"hazard": hazard.numpy()[valid].astype(np.float64),
            "death": batch["done"].numpy()[valid].astype(np.float64),
            "dist": state[:, names.index("fireball_dist")].astype(np.float64),
            "health": state[:, names.index("health")].astype(np.float64),
            "episodes": len(episodes)}


def bins(steps: dict[str, np.ndarray]) -> list[tuple[str, str, np.ndarray]]:
    """(split, bin name, step mask) for every bin of both splits."""
    dist, health = steps["dist"], steps["health"]
    out = [("fireball", "none in view", np.isnan(dist))]
    lo = -math.inf
    for name, hi in zip(DIST_NAMES, (*DIST_EDGES, math.inf)):
        out.append(("fireball", name, ~np.isnan(dist) & (dist >= lo) & (dist < hi)))
        lo = hi
    lo = -math.inf
    for name, hi in zip(HEALTH_NAMES, (*HEALTH_EDGES, math.inf)):
        out.append(("health", name, (health >= lo) & (health < hi)))
        lo = hi
    return out


def rows(steps: dict[str, np.ndarray]) -> list[dict]:
    n, deaths, mass = len(steps["hazard"]), steps["death"].sum(), steps["hazard"].sum()
    out = []
    for split, name, sel in bins(steps):
        k = int(sel.sum())
        game = 1e3 * steps["death"][sel].mean() if k else math.nan
        m = 1e3 * steps["hazard"][sel].mean() if k else math.nan
        out.append({"split": split, "bin": name, "share": k / n, "game": game, "m": m,
                    "ratio": m / game if k and game > 0 else math.nan,
                    "death_share": steps["death"][sel].sum() / deaths if deaths else math.nan,
                    "mass_share": steps["hazard"][sel].sum() / mass if mass else math.nan})
    return out


def table(name: str, steps: dict, rs: list[dict]) -> str:
    lines = [(f"**{name}** ({steps['episodes']} held-out episodes, {len(steps['hazard']):,} "
             f"steps, {int(steps['death'].sum())} deaths; Σ hazard {steps['hazard'].sum():.1f})"),
             "", ("| split | bin | steps | game deaths / 1k | M's hazard / 1k | M / game | "
             "share of deaths | share of M's hazard |"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['split']} | {r['bin']} | {r['share']:.3f} | {_f(r['game'], 2)} | "
              f"{_f(r['m'], 2)} | {_f(r['ratio'], 2)} | {_f(r['death_share'], 3)} | "
              f"{_f(r['mass_share'], 3)} |" for r in rs]
    return "\n".join(lines) + "\n"


def death_ap(steps: dict[str, np.ndarray]) -> float:
    """How well M's hazard ranks the steps that end in a death among all held-out steps:
    average precision (chance: the share of such steps), threshold- and calibration-free,
    comparable with the ``death_next`` probe of z alone (``jepa_wm.probes``)."""
    from jepa_wm.probes import average_precision

    return average_precision(steps["death"] > 0, steps["hazard"])


def summary(named: list[tuple[str, list[dict], float]]) -> str:
    """One line per run: M / game where a fireball touches, at 40-100 and with none in
    view, the share of M's hazard against the share of deaths where one touches, and the
    average precision of M's hazard for the deadly steps."""
    def pick(rs, b):
        return next(r for r in rs if r["bin"] == b)

    lines = [("| run | M / game: touching | 40-100 | none in view | touching: share of deaths "
             "/ of M's hazard | M's death AP |"), "|---|---:|---:|---:|---|---:|"]
    for name, rs, ap in named:
        t, n, o = pick(rs, DIST_NAMES[0]), pick(rs, DIST_NAMES[1]), pick(rs, "none in view")
        lines.append(f"| {name} | {_f(t['ratio'], 2)} | {_f(n['ratio'], 2)} | "
                     f"{_f(o['ratio'], 2)} | {_f(t['death_share'], 2)} / "
                     f"{_f(t['mass_share'], 2)} | {_f(ap, 3)} |")
    return "\n".join(lines) + "\n"


def by_variant(named: list[tuple[str, list[dict], float]]) -> str:
    """Per experiment and V with two seeds or more: the mean over seeds, with a 95%
    bootstrap CI, of M / game where a fireball touches and of the share of M's hazard
    there."""
    from jepa_wm.report import bootstrap_ci

    groups: dict[str, list[list[dict]]] = {}
    for name, rs, _ in named:
        groups.setdefault(name.rsplit("/", 1)[0], []).append(rs)
    lines = [("| V | seeds | M / game: touching, mean [95% CI] | share of M's hazard at "
             "touching | share of deaths there |"), "|---|---:|---|---|---:|"]
    for v, runs in groups.items():
        if len(runs) < 2:
            continue
        cells = []
        for key in ("ratio", "mass_share", "death_share"):
            xs = [r[key] for rs in runs for r in rs if r["bin"] == DIST_NAMES[0]]
            xs = [x for x in xs if math.isfinite(x)]
            lo, hi = bootstrap_ci(xs) if xs else (math.nan, math.nan)
            mean = sum(xs) / len(xs) if xs else math.nan
            cells.append(f"{_f(mean, 2)} [{_f(lo, 2)}, {_f(hi, 2)}]")
        lines.append(f"| {v} | {len(runs)} | {cells[0]} | {cells[1]} | "
                     f"{cells[2].split(' [')[0]} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Cell folders (RUNS/<exp>/<v>/seedK).")
    parser.add_argument("--seed", type=int, default=0, help="Noise of the sampled z fed to M.")
    parser.add_argument("--out", type=Path, default=RESULTS / "hazard_states.md")
    args = parser.parse_args()
    parts, named = [], []
    for run in args.runs:
        steps = per_step(run, args.seed)
        name = "/".join(run.resolve().parts[-3:])
        named.append((name, rows(steps), death_ap(steps)))
        parts.append(table(name, steps, named[-1][1]))
    text = "\n".join(filter(None, (by_variant(named), summary(named), *parts)))
    print(text)
    append_record(args.out, "Where M puts its deaths (`benchmarks/hazard_states.py`)",
                  __doc__.split("\n\n", 2)[2].strip(), "hazard_states.py",
                  f"{cpu_name()}, load {loadavg()}", text)


if __name__ == "__main__":
    main()
