"""Iterative training (Ha & Schmidhuber 2018, sec. 5) on a finished run, round by round:
does M, shown the states the dream-trained C really reaches, stop being exploited?

    python benchmarks/iterate.py RUN [--rounds 1] [--episodes 300] [--epsilon 0.05]
                                     [--memory-epochs 10]

``RUN`` is a finished run folder (``runs/ladder/<rung>/vae/seed0``: V, latents, M, C,
fidelity, eval). Each round is the pipeline's ``iterate`` stage's (``jepa_wm.iterate``):
C plays ``--episodes`` real episodes (random held actions started with chance
``--epsilon``), M trains ``--memory-epochs`` epochs further on them and the run's training
episodes, and a new C is trained from scratch in the new dream with the run's CMA-ES
settings. Unlike the stage, every round's C is also scored: the fidelity figures of its M
and 50 real episodes on the run's own evaluation seeds. C never sees a real reward.

Everything goes into ``RUN/iterate-<hash of the settings>/round-<k>/`` and resumes; rows go
to ``benchmarks/results/iterate.md`` (``.json`` beside it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def settings_hash(args, max_hold: int) -> str:
    from jepa_wm.io import hash_obj

    worlds = {} if args.worlds == "last" else {"worlds": args.worlds}  # older folders kept
    return hash_obj({"episodes": args.episodes, "epsilon": args.epsilon,
                     "memory_epochs": args.memory_epochs, "max_hold": max_hold,
                     **worlds})[:10]


def load_run(run: Path, args):
    """The run's config (with ``args`` as its ``iterate`` section), V, M, C, latents and
    store, and M's train/val split."""
    from jepa_wm.config import experiment_parser
    from jepa_wm.controller import ControllerFile
    from jepa_wm.data import RolloutStore
    from jepa_wm.io import UserError
    from jepa_wm.iterate import memory_episodes
    from jepa_wm.memory import latents_store_path, load_latents, load_memory
    from jepa_wm.vision import load_vision

    cfg = experiment_parser().parse_args(["--config", str(run / "config.yaml")])
    cfg.iterate.rounds, cfg.iterate.episodes = args.rounds, args.episodes
    cfg.iterate.epsilon, cfg.iterate.memory_epochs = args.epsilon, args.memory_epochs
    cfg.iterate.worlds, cfg.workers = args.worlds, args.workers
    latents = load_latents(run / "latents")
    store = RolloutStore(latents_store_path(latents))
    memory = load_memory(run / "memory" / "final.ckpt")
    try:
        train, val = memory_episodes(cfg, memory, run / "memory" / "final.ckpt", store)
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    return {"cfg": cfg, "vision": load_vision(run / "vision" / "final.ckpt"),
            "vision_ckpt": run / "vision" / "final.ckpt", "memory": memory,
            "controller": ControllerFile.load(run / "controller" / "best.npz"),
            "latents": latents, "store": store, "train": train, "val": val}


def run_round(k: int, base: dict, prev, stores: list, sets: list, folder: Path):
    """Round ``k`` (``jepa_wm.iterate.run_round``) into ``folder``, then its fidelity
    figures and a full evaluation of its C; returns ``(row, models for the next round)``."""
    from jepa_wm.controller import ControllerFile
    from jepa_wm.controller.cmaes import make_dream
    from jepa_wm.controller.evaluate import evaluate
    from jepa_wm.data import RolloutStore
    from jepa_wm.envs import EnvSettings
    from jepa_wm.io import read_json, write_json
    from jepa_wm.iterate import Models, round_summary
    from jepa_wm.iterate import run_round as iterate_round
    from jepa_wm.memory import load_latents, load_memory
    from jepa_wm.stages.fidelity import measure_memory

    cfg, result_file = base["cfg"], folder / "result.json"
    if result_file.exists():  # a finished round: its data and models are the next's inputs
        stores.append(RolloutStore(folder / "data"))
        sets.append(load_latents(folder / "latents"))
        models = Models(load_memory(folder / "memory" / "final.ckpt"),
                        folder / "memory" / "final.ckpt",
                        ControllerFile.load(folder / "controller" / "best.npz"),
                        (*prev.earlier, prev.memory))
        return read_json(result_file), models
    times = {}
    models = iterate_round(cfg, k, base["vision"], base["vision_ckpt"], prev, stores, sets,
                           base["train"], base["val"], base["latents"], base["store"], folder,
                           times)
    start = time.time()
    fid = measure_memory(cfg, models.memory, base["latents"], base["store"], base["val"])
    times["fidelity"] = time.time() - start
    start = time.time()
    dream = make_dream(cfg.controller_train, models.memory, base["latents"], base["store"])
    ev = evaluate(cfg.evaluate, cfg.seed, EnvSettings.of(cfg), base["vision"], models.memory,
                  models.controller, dream)
    times["evaluate"] = time.time() - start
    summary = round_summary(folder, stores[-1])
    row = {"round": k, "collected": {key: summary[key] for key in (
               "episodes", "length_mean", "length_std", "frames")},
           "train_episodes": len(base["train"]) + sum(s.num_episodes for s in stores[1:]),
           "fidelity": {key: fid[key] for key in (
               "death_sum_per_episode", "brier", "policy_survival_dream",
               "policy_survival_real", "policy_survival_ratio") if key in fid},
           "real_checks": summary["real_checks"],
           **{key: ev[key] for key in ("real_mean", "real_std", "real_scores", "dream_mean",
                                       "dream_real_gap", "tau")},
           "wall_time": {"collect": times.get("collect", 0.0),
                         "memory": times.get("train-memory", 0.0),
                         "controller": times.get("train-controller", 0.0),
                         "encode": times.get("encode", 0.0), "fidelity": times["fidelity"],
                         "evaluate": times["evaluate"]}}
    write_json(result_file, row)
    return row, models


def ci95(x) -> tuple[float, float]:
    from jepa_wm.report import bootstrap_ci

    return bootstrap_ci(np.asarray(x, float))


def write_results(rows: list[dict], out: Path, command: str) -> None:
    data = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(
        ".json").exists() else {}
    for r in rows:
        data[f"{r['run']}|{r['settings']}|{r['round']}"] = r
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    lines = ["# Iterative training (`benchmarks/iterate.py`)", "",
             ("Round 0 is the run as the ladder left it; round k collects episodes with "
             "round k-1's C (random held actions mixed in), trains M further on all the "
             "data, and trains a new C from scratch in its dream. C never sees a real "
             "reward; the real checks (4 episodes at CMA-ES generations 10, 20, 30, own "
             "seeds) are logged, not used. Real: 50 episodes on the run's fixed evaluation "
             "seeds, 95% bootstrap CI."), "",
             ("- commands: each run's rows come from `python benchmarks/iterate.py "
             "runs/ladder/<run> --rounds <its last round>` (the settings column gives "
             "`--episodes`, `--epsilon`, `--memory-epochs`); the last one written: "
             f"`{command}`"),
             (f"- written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
             f"{cpu_name()}; load {loadavg()}"), "",
             ("| run | settings | round | C's episodes (len) | M train eps | Σ p(done)/ep | "
             "policy survival ratio | real checks | C dream | C real ± std | 95% CI | "
             "wall s (collect / M / C / eval) |"),
             "|---|---|---:|---|---:|---:|---:|---|---:|---:|---|---|"]
    for key in sorted(data):
        r = data[key]
        f = r.get("fidelity", {})
        lo, hi = ci95(r["real_scores"])
        col = r.get("collected")
        collected = f"{col['episodes']} ({col['length_mean']:.0f})" if col else "—"
        w = r.get("wall_time", {})
        walls = " / ".join(f"{w.get(s, 0):.0f}" for s in ("collect", "memory", "controller",
                                                          "evaluate")) if w else "—"
        checks = ", ".join(f"{c:.0f}" for c in r.get("real_checks", [])) or "—"
        lines.append(
            f"| {r['run']} | {r['settings']} | {r['round']} | {collected} | "
            f"{r.get('train_episodes', '—')} | {f.get('death_sum_per_episode', math.nan):.2f} | "
            f"{f.get('policy_survival_ratio', math.nan):.2f} | {checks} | "
            f"{r['dream_mean']:.0f} | {r['real_mean']:.1f} ± {r['real_std']:.1f} | "
            f"[{lo:.0f}, {hi:.0f}] | {walls} |")
    out.write_text("\n".join(lines) + "\n")


def round0(run: Path, base: dict) -> dict:
    """The run itself as round 0 (its fidelity and evaluation files)."""
    from jepa_wm.io import read_json

    res = read_json(run / "eval" / "results.json")
    fid = read_json(run / "fidelity" / "fidelity.json") if (
        run / "fidelity" / "fidelity.json").exists() else {}
    history = read_json(run / "controller" / "history.json")
    return {"round": 0, "collected": None, "train_episodes": len(base["train"]),
            "fidelity": {k: fid[k] for k in ("death_sum_per_episode", "brier",
                                             "policy_survival_ratio") if k in fid},
            "real_checks": [h["real_mean"] for h in history
                            if h.get("real_mean") is not None],
            **{k: res[k] for k in ("real_mean", "real_std", "real_scores", "dream_mean",
                                   "dream_real_gap", "tau")}, "wall_time": {}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="A finished run folder (V, latents, M, C, eval).")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--episodes", type=int, default=300, help="Episodes collected per round.")
    p.add_argument("--epsilon", type=float, default=0.05)
    p.add_argument("--memory-epochs", type=int, default=10)
    p.add_argument("--worlds", choices=("last", "all"), default="last",
                   help="iterate.worlds: each round's C trains in the last M's dream or in "
                        "every M's so far.")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "iterate.md")
    args = p.parse_args()
    run = args.run.resolve()
    if not (run / "eval" / "results.json").exists():
        raise SystemExit(f"{run}: not a finished run (no eval/results.json)")
    base = load_run(run, args)
    from jepa_wm.iterate import Models, check_config

    check_config(base["cfg"].iterate)
    root = run / f"iterate-{settings_hash(args, base['cfg'].max_hold)}"
    root.mkdir(exist_ok=True)
    (root / "settings.json").write_text(json.dumps(vars(args) | {"run": str(run)},
                                                   default=str, indent=1))
    name = "/".join(run.parts[-3:])
    settings = f"{args.episodes} eps, ε {args.epsilon}, M +{args.memory_epochs} ep" + (
        ", C in every M's dream" if args.worlds == "all" else "")
    command = "python benchmarks/iterate.py " + " ".join(sys.argv[1:])
    rows = [{"run": name, "settings": settings, **round0(run, base)}]
    prev = Models(base["memory"], run / "memory" / "final.ckpt", base["controller"])
    stores, sets = [base["store"]], [base["latents"]]
    for k in range(1, args.rounds + 1):
        row, prev = run_round(k, base, prev, stores, sets, root / f"round-{k}")
        rows.append({"run": name, "settings": settings, **row})
        write_results(rows, args.out, command)
        print(f"round {k}: real {row['real_mean']:.1f} ± {row['real_std']:.1f}, dream "
              f"{row['dream_mean']:.0f}, checks {row['real_checks']}", flush=True)
    write_results(rows, args.out, command)


if __name__ == "__main__":
    main()
