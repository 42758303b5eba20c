"""Does M's dream rate "hold one action for the whole episode" safer than the game? (issue
11) The C's that fail run into a wall and stay there; this figure, now part of the
``fidelity`` stage (``fidelity.hold_survival``), is measured here on finished runs whose
fidelity folders predate it, beside the real score of the C trained in that M's dream.

    python benchmarks/hold_survival.py RUNS/<experiment>/<variant>/seed<k> [...] [--episodes 16]

Per cell: round 0's M (``memory/``) and, after ``iterate`` rounds, the last round's
(``iterate/final.ckpt``), each in the run's own fidelity dream (its config's τ, deaths,
start, 1,024 dreams per action); the real lengths of the same holds on the env seeds of
``fidelity.real_hold_lengths``; the real score of the C trained in that M's dream, where the
run evaluated one (``eval/results.json``, or the real checks of round 0's CMA-ES). Appends
to ``benchmarks/results/hold_survival.md`` (a cell already there is replaced).
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from pathlib import Path

import yaml
from common import cpu_name, loadavg, results_path

from jepa_wm.contract import stage_folder

ROOT = Path(__file__).resolve().parents[1]
HEADER = [("| run | M | hold dream: noop / left / right | game | largest ratio | C real "
          "(what it is) | written |"), "|---|---|---|---|---:|---|---|"]


def c_real(cell: Path, last: bool) -> str:
    """The real score of the C trained in this M's dream, as far as the run measured it."""
    from jepa_wm.io import read_json

    results = cell / "eval" / "results.json"
    r = read_json(results) if results.exists() else None
    if r and (last or not r.get("iterate")):
        return (f"{r['real_mean']:.1f} ± {r['real_std']:.1f} ({len(r['real_scores'])} "
                "evaluation episodes)")
    history = stage_folder(cell, "train-controller") / "history.json"
    checks = [h["real_mean"] for h in read_json(history) if h.get("real_mean") is not None] \
        if history.exists() else []
    return ("checks " + ", ".join(f"{c:.0f}" for c in checks) + " (CMA-ES real checks)"
            if checks else "—")


def measure_cell(cell: Path, episodes: int) -> list[str]:
    from jepa_wm.data import RolloutStore
    from jepa_wm.fidelity import hold_survival
    from jepa_wm.memory import latents_store_path, load_latents, load_memory
    from jepa_wm.pipeline import resolve
    from jepa_wm.stages.fidelity import dream_settings, fidelity_dream, real_holds

    cfg = resolve([ROOT / "configs/experiments/doom_fast.yaml", cell / "config.yaml"],
                  yaml.safe_load((cell / "config.yaml").read_text())["seed"], cell.parents[2])
    cfg.evaluate.fidelity_hold_episodes = episodes
    latents = load_latents(stage_folder(cell, "encode"))
    store = RolloutStore(latents_store_path(latents, None))
    real = real_holds(cfg)
    models = [("round 0", stage_folder(cell, "train-memory") / "final.ckpt", False)]
    rounds = cfg.iterate.rounds
    if rounds:
        models.append((f"round {rounds}", stage_folder(cell, "iterate") / "final.ckpt", True))
    rows, when = [], f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    for name, path, last in models:
        memory = load_memory(path)
        out = hold_survival(fidelity_dream(cfg, memory, latents, store), real,
                            dream_settings(cfg)["dreams"], cfg.seed)
        dream = " / ".join(f"{v:.0f}" for v in out["hold_survival_dream"].values())
        game = " / ".join(f"{v:.0f}" for v in out["hold_survival_real"].values())
        worst = out["hold_survival_action_max"]
        rows.append(f"| {cell.parents[1].name}/{cell.parent.name}/{cell.name} | {name} | "
                    f"{dream} | {game} | {out['hold_survival_ratio_max']:.2f} (action "
                    f"{worst}) | {c_real(cell, last)} | {when} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", type=Path, nargs="+", help="Finished run cells.")
    parser.add_argument("--episodes", type=int, default=16,
                        help="Real episodes per held action.")
    parser.add_argument("--out", type=Path, default=None, help="Results file.")
    args = parser.parse_args()
    path = results_path("hold_survival", False, args.out)
    old = path.read_text().splitlines() if path.exists() else []
    rows = [line for line in old if line.startswith("| ladder_")]
    load_before = loadavg()
    for cell in args.cells:
        cell = cell.resolve()
        name = f"| {cell.parents[1].name}/{cell.parent.name}/{cell.name} |"
        rows = [r for r in rows if not r.startswith(name)] + measure_cell(cell, args.episodes)
    text = "\n".join([
        "# Holding one action: the dream against the game (issue 11)", "",
        ("The controllers that fail run into a wall and stay there. Each action of "
        "VizDoom take-cover (0 no-op, 1 left, 2 right) held for a whole episode: mean "
        "survival in 1,024 of M's fidelity dreams (the run's τ and death rule) against "
        f"{args.episodes} real episodes per action (env seeds `fidelity.HOLD_SEED_BASE` + "
        "10,000 seed + i). A ratio above 1: the dream rates that hold safer than the game."),
        "",
        ("- command: `python benchmarks/hold_survival.py RUNS/<experiment>/vae/seed<k> ...` "
        "(the figure is part of the `fidelity` stage from this version on)"),
        (f"- last written on {cpu_name()}, {os.cpu_count()} CPUs; load {load_before} before, "
        f"{loadavg()} after"), "", *HEADER, *sorted(rows), ""])
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
