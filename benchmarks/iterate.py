"""Iterative training (Ha & Schmidhuber 2018, sec. 5) on a finished run: does M, shown the
states the dream-trained C really reaches, stop being exploited?

    python benchmarks/iterate.py RUN [--rounds 1] [--episodes 300] [--epsilon 0.05]
                                     [--memory-epochs 10]

``RUN`` is a finished run folder (``runs/ladder/<rung>/vae/seed2``: V, latents, M, C, eval).
Each round k:

1. collect ``--episodes`` real episodes with round k-1's C (round 0's is the run's own),
   V and M in the loop, a random held action (the collection policy's) started with chance
   ``--epsilon`` at each step not already in one; new seeds, the game state recorded;
2. encode them with the run's V;
3. train M further (from round k-1's weights) for ``--memory-epochs`` epochs over the run's
   training episodes plus every round's new episodes (held out: the run's validation
   episodes, so the fidelity figures stay comparable);
4. train C from scratch in the new M's dream with the run's CMA-ES settings (real checks
   included, as in the run);
5. the fidelity figures and the final evaluation on the run's own 50 evaluation seeds.

C never sees a real reward: the real episodes only feed M, as in the paper's procedure.
Everything goes into ``RUN/iterate-<hash of the settings>/round-<k>/``; each step resumes
(collect by episode, M from ``last.ckpt``, CMA-ES by generation) and a finished step is
skipped. The rows are written to ``benchmarks/results/iterate.md`` (``.json`` beside it).
"""

from __future__ import annotations

import argparse
import copy
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
#: Store seeds of the rounds' collections: far from the run's own (0..) and the evaluation's.
ROUND_SEED_BASE = 500_000


def settings_hash(args) -> str:
    from jepa_wm.io import hash_obj

    return hash_obj({"episodes": args.episodes, "epsilon": args.epsilon,
                     "memory_epochs": args.memory_epochs, "max_hold": args.max_hold})[:10]


def load_run(run: Path):
    """The run's config, V, M, C, latents and store, and its M's train/val split."""
    from jepa_wm.config import experiment_parser
    from jepa_wm.controller import ControllerFile
    from jepa_wm.data import RolloutStore
    from jepa_wm.memory import latents_store_path, load_latents, load_memory, memory_split
    from jepa_wm.vision import load_vision

    cfg = experiment_parser().parse_args(["--config", str(run / "config.yaml")])
    latents = load_latents(run / "latents")
    store = RolloutStore(latents_store_path(latents))
    memory = load_memory(run / "memory" / "final.ckpt")
    train, val = memory_split(store, cfg.memory_train, cfg.seed)
    if sorted(val.tolist()) != sorted(memory.extra.get("val_episodes", [])):
        raise SystemExit(f"{run}: M's held-out episodes are not memory_split's; stale run?")
    return {"cfg": cfg, "vision": load_vision(run / "vision" / "final.ckpt"),
            "vision_ckpt": run / "vision" / "final.ckpt", "memory": memory,
            "controller": ControllerFile.load(run / "controller" / "best.npz"),
            "latents": latents, "store": store, "train": train, "val": val}


def timed(times: dict, key: str, fn, *a, **k):
    t = time.time()
    out = fn(*a, **k)
    times[key] = times.get(key, 0.0) + time.time() - t
    return out


def run_round(k: int, base: dict, prev: dict, stores: list, sets: list, args,
              folder: Path) -> dict:
    """Round ``k`` into ``folder``: collect with ``prev``'s C, encode, M, C, evaluate."""
    import torch

    from jepa_wm.controller import ControllerFile, single_thread
    from jepa_wm.controller.cmaes import Trainer, make_dream
    from jepa_wm.controller.evaluate import evaluate
    from jepa_wm.controller.policy import ControllerPolicy
    from jepa_wm.data import RolloutStore
    from jepa_wm.data.collect import collect
    from jepa_wm.data.concat import ConcatLatents, ConcatStore
    from jepa_wm.dream import Dream, dream_starts
    from jepa_wm.fidelity import measure
    from jepa_wm.io import is_done, mark_done, read_json, write_json
    from jepa_wm.memory import fit_memory, load_latents, load_memory
    from jepa_wm.stages.fidelity import dream_settings
    from jepa_wm.stages.train_controller import real_player
    from jepa_wm.vision.encode import encode_store

    cfg, times = base["cfg"], {}
    folder.mkdir(parents=True, exist_ok=True)
    result_file = folder / "result.json"
    if result_file.exists():  # a finished round: its data and models are the next's inputs
        stores.append(RolloutStore(folder / "data"))
        sets.append(load_latents(folder / "latents"))
        prev.update(memory=load_memory(folder / "memory" / "final.ckpt"),
                    memory_path=folder / "memory" / "final.ckpt",
                    controller=ControllerFile.load(folder / "controller" / "best.npz"))
        return read_json(result_file)
    # 1. data from the previous C
    policy = ControllerPolicy(base["vision"], prev["memory"], prev["controller"],
                              seed=ROUND_SEED_BASE + k, epsilon=args.epsilon,
                              max_hold=args.max_hold)
    with torch.no_grad(), single_thread():
        summary = timed(times, "collect", collect, cfg.env, folder / "data", args.episodes,
                        seed=ROUND_SEED_BASE + 1000 * cfg.seed + k, workers=args.workers,
                        image_size=cfg.image_size, frame_skip=cfg.frame_skip,
                        max_episode_steps=cfg.max_episode_steps, policy=policy,
                        progress=False)
    print(f"round {k}: collected {summary['episodes']} episodes with C, length "
          f"{summary['length_mean']:.0f} ± {summary['length_std']:.0f}", flush=True)
    # 2. their latents
    timed(times, "encode", encode_store, base["vision_ckpt"], folder / "data",
          folder / "latents", show_progress=False)
    stores.append(RolloutStore(folder / "data"))
    sets.append(load_latents(folder / "latents"))
    store, latents = ConcatStore(stores), ConcatLatents(sets)
    # 3. M trained further on all the data so far
    mcfg = copy.deepcopy(cfg)
    mcfg.memory_train.max_epochs, mcfg.memory_train.max_steps = args.memory_epochs, -1
    new_eps = np.concatenate([store.episodes_of(i) for i in range(1, len(stores))])
    train = np.concatenate([base["train"], new_eps])
    mem_dir = folder / "memory"
    if not is_done(mem_dir, "iterate"):
        module = load_memory(prev["memory_path"]).train()
        timed(times, "memory", fit_memory, mcfg, module, store, latents, train, base["val"],
              mem_dir, "iterate")
        mark_done(mem_dir, "iterate", wall_time=times["memory"])
    memory = load_memory(mem_dir / "final.ckpt")
    # 4. C in the new dream, from scratch, the run's CMA-ES settings
    cc = cfg.controller_train
    dream = make_dream(cc, memory, base["latents"], base["store"])
    ctl_dir = folder / "controller"
    if not is_done(ctl_dir, "iterate"):
        real = real_player(cfg, base["vision"], memory, cc.include_cell, cc.workers)
        state = timed(times, "controller", Trainer(cfg, memory, dream, real, ctl_dir).run)
        mark_done(ctl_dir, "iterate", wall_time=times["controller"],
                  best_fitness=state["best_fitness"])
    controller = ControllerFile.load(ctl_dir / "best.npz")
    # 5. fidelity (the run's held-out random-policy episodes) and the final evaluation
    s = dream_settings(cfg)
    starts, sigma = dream_starts(base["latents"], memory, s["start"], base["store"])
    fdream = Dream(memory, starts, tau=s["tau"], done=s["done"], reward="survival",
                   max_steps=s["max_steps"], start_sigma=sigma,
                   done_threshold=s["done_threshold"])
    with single_thread():
        fid = timed(times, "fidelity", measure, memory, fdream, base["latents"],
                    base["store"], base["val"], s["max_hold"], s["dreams"], seed=cfg.seed)
    ev = timed(times, "evaluate", evaluate, cfg, base["vision"], memory, controller, dream)
    history = read_json(ctl_dir / "history.json")
    checks = [h["real_mean"] for h in history if h.get("real_mean") is not None]
    out = {"round": k, "collected": {"episodes": summary["episodes"],
                                     "length_mean": summary["length_mean"],
                                     "length_std": summary["length_std"],
                                     "frames": summary["frames"]},
           "train_episodes": len(train), "train_frames":
               int(store.episode_lengths[train].sum()),
           "fidelity": {k2: fid[k2] for k2 in ("death_sum_per_episode", "brier",
                                               "policy_survival_dream",
                                               "policy_survival_real",
                                               "policy_survival_ratio") if k2 in fid},
           "real_checks": checks, **{k2: ev[k2] for k2 in (
               "real_mean", "real_std", "real_scores", "dream_mean", "dream_real_gap", "tau")},
           "wall_time": times}
    write_json(result_file, out)
    prev.update(memory=memory, memory_path=mem_dir / "final.ckpt", controller=controller)
    return out


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
             f"- command: `{command}`",
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
    p.add_argument("--max-hold", type=int, default=10)
    p.add_argument("--memory-epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "iterate.md")
    args = p.parse_args()
    run = args.run.resolve()
    if not (run / "eval" / "results.json").exists():
        raise SystemExit(f"{run}: not a finished run (no eval/results.json)")
    base = load_run(run)
    h = settings_hash(args)
    root = run / f"iterate-{h}"
    root.mkdir(exist_ok=True)
    (root / "settings.json").write_text(json.dumps(vars(args) | {"run": str(run)},
                                                   default=str, indent=1))
    name = "/".join(run.parts[-3:])
    settings = f"{args.episodes} eps, ε {args.epsilon}, M +{args.memory_epochs} ep"
    command = "python benchmarks/iterate.py " + " ".join(sys.argv[1:])
    rows = [{"run": name, "settings": settings, **round0(run, base)}]
    prev = {"memory": base["memory"], "memory_path": run / "memory" / "final.ckpt",
            "controller": base["controller"]}
    stores, sets = [base["store"]], [base["latents"]]
    for k in range(1, args.rounds + 1):
        row = run_round(k, base, prev, stores, sets, args, root / f"round-{k}")
        rows.append({"run": name, "settings": settings, **row})
        write_results(rows, args.out, command)
        print(f"round {k}: real {row['real_mean']:.1f} ± {row['real_std']:.1f}, dream "
              f"{row['dream_mean']:.0f}, checks {row['real_checks']}", flush=True)
    write_results(rows, args.out, command)


if __name__ == "__main__":
    main()
