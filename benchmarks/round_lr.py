"""Does a round of iterative training damage M because Adam restarts at M's full rate?
Redo round 1's M step of a finished run at other learning rates and measure each M's
fidelity on the run's held-out episodes (issue 11).

    python benchmarks/round_lr.py RUNS/<experiment>/<variant>/seed<k> --lrs 1e-4 [--out ...]

The run must have finished its ``iterate`` stage with at least one round (its round-1 data
and latents are reused as they are). Each rate trains M from the run's round-0 M for
``iterate.memory_epochs`` epochs on the run's training episodes plus round 1's, exactly as
the stage does (``jepa_wm.iterate.fit_round_memory``), into
``<cell>/round_lr/lr<rate>`` (a finished rate is reused), then ``measure_memory`` as the
fidelity stage. The row of the run's own round-1 M is read from its ``iterate/fidelity.json``.
Writes ``benchmarks/results/round_lr.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from common import cpu_name, loadavg

RESULTS = Path(__file__).parent / "results"
KEYS = ("death_sum_per_episode", "brier", "hazard_early", "policy_survival_dream",
        "policy_survival_real", "policy_survival_ratio", "open_loop_mse_10", "val_gmm_nll",
        "val_done_loss")


def retrain(cell: Path, lr: float) -> dict:
    from jepa_wm import contract, pipeline
    from jepa_wm.config import experiment_parser
    from jepa_wm.data import RolloutStore
    from jepa_wm.data.concat import ConcatLatents, ConcatStore
    from jepa_wm.io import is_done, mark_done, read_json, write_json
    from jepa_wm.iterate import fit_round_memory, memory_episodes
    from jepa_wm.memory import load_latents, load_memory
    from jepa_wm.stages.fidelity import measure_memory
    from jepa_wm.stages.train_controller import load_parts

    out = cell / "round_lr" / f"lr{lr:g}"
    if is_done(out, "round-lr") and (out / "fidelity.json").exists():
        return read_json(out / "fidelity.json")
    cfg = experiment_parser().parse_object(yaml.safe_load((cell / "config.yaml").read_text()))
    runs = cell.parents[2]
    paths = contract.run_paths(cfg, runs)
    scfg, _ = pipeline.stage_config("iterate", cfg, paths)
    memory, _, latents, store = load_parts(scfg)
    train_eps, val_eps = memory_episodes(scfg, memory, scfg.memory, store)
    rd = cell / "iterate" / "round-1"
    stores, sets = [store, RolloutStore(rd / "data")], [latents, load_latents(rd / "latents")]
    cstore, clat = ConcatStore(stores), ConcatLatents(sets)
    new = np.concatenate([cstore.episodes_of(i) for i in range(1, len(stores))])
    rcfg = copy.deepcopy(scfg)
    rcfg.iterate.memory_lr = lr
    fit_round_memory(rcfg, Path(scfg.memory), cstore, clat, np.concatenate([train_eps, new]),
                     val_eps, out, "round-lr-m")
    figures = measure_memory(scfg, load_memory(out / "final.ckpt"), latents, store, val_eps,
                             out / "metrics.json")
    write_json(out / "fidelity.json", figures)
    mark_done(out, "round-lr")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", type=Path, help="A finished run with >= 1 round.")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4])
    parser.add_argument("--out", type=Path, default=RESULTS / "round_lr.md")
    args = parser.parse_args()
    cell = args.cell.resolve()
    if not (cell / "iterate" / "round-1" / "memory").is_dir():
        raise SystemExit(f"{cell}: no iterate/round-1/memory; run the iterate stage with "
                         "iterate.rounds >= 1 first")
    load = loadavg()
    rows = {"round 0 (train-memory)": json.loads((cell / "fidelity" / "fidelity.json")
                                                .read_text())}
    from jepa_wm.memory import load_memory

    own = yaml.safe_load((cell / "config.yaml").read_text())
    own_lr = (own.get("iterate") or {}).get("memory_lr") or \
        load_memory(cell / "memory" / "final.ckpt").hparams.lr  # M's own rate
    rows[f"round 1, lr {own_lr:g} (the run's)"] = json.loads(
        (cell / "iterate" / "fidelity.json").read_text())
    for lr in args.lrs:
        start = time.time()
        rows[f"round 1, lr {lr:g}"] = retrain(cell, lr)
        print(f"lr {lr:g}: {time.time() - start:.0f} s", flush=True)
    lines = ["# A round's M at other learning rates (`benchmarks/round_lr.py`)", "",
             f"- command: `python benchmarks/round_lr.py {' '.join(sys.argv[1:])}`",
             (f"- {time.strftime('%Y-%m-%d %H:%M')} UTC; {cpu_name()}; load {load} at the "
              f"start, {loadavg()} at the end"),
             (f"- run: `{cell}`; fidelity on its "
              f"{rows['round 0 (train-memory)'].get('episodes', '?')} held-out random-policy "
              "episodes, as the fidelity stage measures it"), "",
             "| M | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
    for name, f in rows.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{f[k]:.4g}" if isinstance(f.get(k), (int, float)) else "—" for k in KEYS) + " |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
