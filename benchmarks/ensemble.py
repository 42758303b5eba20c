"""C trained in the dreams of several M's at once: does a hole CMA-ES finds in one M survive
in the others?

    python benchmarks/ensemble.py --cells RUN [RUN ...] --out DIR [--threads 2]

A C trained in one M's dream scores 1.3-3.4x its real score there, and a second M fitted
to the same store and V often rates it far lower (``exploit.py``: h30 seed 3's C, real
791, 1,487 in its own M's dream and 550 in the packed M's): part of what CMA-ES exploits
belongs to one M, not to the data. Here the candidates are scored in every cell's M at
once (``dream_fitness``: each candidate's rollouts shared out evenly over the worlds), the
first cell's M as C's memory (the ``observer`` of the other dreams, as it is in the game),
its dream settings, store, starts and seed for everything. C is then scored as ``evaluate``
scores a run's C: the first cell's 50 fixed evaluation episodes, and 512 dreams of each
M. Every cell's M must be trained on the same V's latents. CMA-ES resumes from ``DIR``.
Writes ``DIR/results.json`` and appends a row to ``benchmarks/results/ensemble.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# isort: off
import jepa_wm  # noqa: F401  first, as the CLI does: its OpenMP default is set before torch loads
# isort: on
import torch
from common import RESULTS, append_record, cpu_name, loadavg  # benchmarks/common.py
from exploit import cell_parts, label, play  # benchmarks/exploit.py


def main() -> int:
    from jepa_wm.controller import ControllerFile
    from jepa_wm.controller.cmaes import Trainer, make_dream
    from jepa_wm.controller.evaluate import evaluate
    from jepa_wm.envs import EnvSettings
    from jepa_wm.io import read_json, write_json
    from jepa_wm.report import bootstrap_ci
    from jepa_wm.stages.train_controller import real_player
    from jepa_wm.vision import load_vision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=Path, nargs="+", required=True,
                        help="Cells whose M's are the worlds; the first one's is C's memory.")
    parser.add_argument("--out", type=Path, required=True, help="C's folder (resumes).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--generations", type=int, default=None,
                        help="CMA-ES generations (default: the first cell's).")
    parser.add_argument("--record", type=Path, default=RESULTS / "ensemble.md")
    args = parser.parse_args()
    if len(args.cells) < 2:
        sys.exit("error: --cells: give at least two cells (one M is a plain run)")
    torch.set_num_threads(args.threads)
    first = cell_parts(args.cells[0], controller=True)
    others = [cell_parts(run, controller=False) for run in args.cells[1:]]
    for w in others:
        if w["vision"] != first["vision"]:
            sys.exit(f"error: {label(w['run'])}: its M was trained on another V's latents; "
                     "the cells must share V")
    cfg, cc, memory = first["cfg"], first["cfg"].controller_train, first["memory"]
    if args.generations is not None:
        cc.generations = args.generations
    latents, store = first["latents"], first["store"]
    worlds = [make_dream(cc, memory, latents, store),
              *(make_dream(cc, w["memory"], latents, store, observer=memory) for w in others)]
    vision = load_vision(args.cells[0] / "vision" / "final.ckpt")
    env = EnvSettings.of(cfg)
    load, start = loadavg(), time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    real = real_player(env, vision, memory, cc.include_cell, cc.workers)
    state = Trainer(cc, cfg.seed, memory, worlds, real, args.out).run()
    c_seconds = time.time() - start
    controller = ControllerFile.load(args.out / "best.npz")
    results = evaluate(cfg.evaluate, cfg.seed, env, vision, memory, controller, worlds[0])
    trained = {**first, "controller": controller}
    in_world = {label(w["run"]): play(trained, w, w is first, cfg.evaluate.dream_episodes)
                ["mean"] for w in [first, *others]}
    results.update(cells=[str(c) for c in args.cells], dream_by_world=in_world,
                   generations=state["generation"], c_seconds=c_seconds)
    write_json(args.out / "results.json", results)
    real_mean = results["real_mean"]
    lo, hi = bootstrap_ci(results["real_scores"])
    own = [f"{label(r)}: {read_json(r / 'eval' / 'results.json')['real_mean']:.1f}"
           if (r / "eval" / "results.json").exists() else f"{label(r)}: —"
           for r in args.cells]
    worlds_text = "<br>".join(f"{k}: {v:.0f} ({v / real_mean:.2f}x)" for k, v in in_world.items())
    print(f"ensemble: real {real_mean:.1f} [{lo:.0f}, {hi:.0f}]; " + "; ".join(
        f"{k} {v:.0f}" for k, v in in_world.items()))
    append_record(
        args.record, "C trained in several M's dreams at once (`benchmarks/ensemble.py`)",
        "Each row: a C trained by CMA-ES (the first cell's controller_train settings and "
        "seed) with each candidate's rollouts shared out over the M's of the cells (same "
        "store and V), the first cell's M as C's memory; its real score over the first "
        "cell's 50 fixed evaluation episodes (95% bootstrap CI), each cell's own C's real "
        "score for comparison, and the new C's dream score in each M (x its real score).",
        "ensemble.py",
        f"{cpu_name()}, {args.threads} threads, CMA-ES {c_seconds / 60:.1f} min, load "
        f"{load} before, {loadavg()} after.",
        "| worlds | C real [95% CI] | each cell's own C, real | new C in each M's dream |\n"
        f"|---|---|---|---|\n| {len(args.cells)} M's | {real_mean:.1f} [{lo:.0f}, {hi:.0f}] | "
        + "<br>".join(own) + f" | {worlds_text} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
