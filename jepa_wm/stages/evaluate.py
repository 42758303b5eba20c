"""``jepa-wm evaluate --config ... --vision CKPT --memory CKPT --controller FILE --latents DIR
--out DIR``: C in the real env (fixed seeds) and in the dream at the training τ; writes
``results.json`` and prints a one-line summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--vision", type=str, required=True, help="V checkpoint.")
    parser.add_argument("--memory", type=str, required=True, help="M checkpoint.")
    parser.add_argument("--controller", type=str, required=True, help="C file (best.npz).")
    parser.add_argument("--latents", type=str, required=True,
                        help="Latent set (dream starting latents).")
    parser.add_argument("--out", type=str, required=True, help="Output folder.")
    parser.add_argument("--data", type=Optional[str], default=None,
                        help="Rollout store of the latents (default: the one their "
                             "meta.json names).")
    parser.add_argument("--fidelity", type=Optional[str], default=None,
                        help="fidelity.json of the fidelity stage, copied into results.json "
                             "(`fidelity`).")


def config_hash(cfg: Namespace) -> str:
    """What the evaluation depends on: its section, C's section (τ) and C itself."""
    from jepa_wm.contract import identity
    from jepa_wm.io import sha256_file

    fidelity = sha256_file(cfg.fidelity)[:16] if cfg.fidelity and Path(
        cfg.fidelity).exists() else ""
    return identity("evaluate", cfg, upstream=sha256_file(cfg.controller)[:16] + fidelity)


def tau_table(cfg: Namespace, memory, vision, latents, store, out: Path) -> list[dict]:
    """The paper's virtual-vs-actual table: for each τ in ``evaluate.taus``, C trained in
    the dream at τ (resumable in ``out/tau-<τ>``), its dream score at τ and real score."""
    from jepa_wm.controller import ControllerFile
    from jepa_wm.controller.cmaes import Trainer, make_dream
    from jepa_wm.controller.evaluate import dream_scores, real_scores
    from jepa_wm.envs import EnvSettings

    rows = []
    for tau in cfg.evaluate.taus:
        dream = make_dream(cfg.controller_train, memory, latents, store, tau=tau)
        if tau == cfg.controller_train.tau:  # the C of this run: the same search, done
            controller = ControllerFile.load(cfg.controller)
        else:
            folder = out / f"tau-{tau:g}"
            folder.mkdir(parents=True, exist_ok=True)
            Trainer(cfg.controller_train, cfg.seed, memory, dream, None, folder).run()
            controller = ControllerFile.load(folder / "best.npz")
        dream_mean = float(dream_scores(dream, controller, cfg.evaluate.dream_episodes,
                                        cfg.seed)["returns"].mean())
        real = real_scores(EnvSettings.of(cfg), cfg.seed, vision, memory, controller,
                           cfg.evaluate.episodes, cfg.evaluate.workers)["returns"]
        rows.append({"tau": tau, "dream_mean": dream_mean, "real_mean": float(real.mean()),
                     "real_std": float(real.std()),
                     "real_scores": [float(x) for x in real]})
        print(f"evaluate: tau {tau:g}: dream {dream_mean:.1f}, real {real.mean():.1f}")
    return rows


def log_results(cfg: Namespace, out: Path, results: dict) -> None:
    """The scores to W&B (summary of the evaluate run, plus the tau table)."""
    from jepa_wm.report.stats import C_FIDELITY_KEYS
    from jepa_wm.tracking import wandb_run

    run = wandb_run(cfg, "evaluate", out)
    try:
        run.summary.update({f"fidelity/{k}": v for k, v in results.get("fidelity", {}).items()
                            if isinstance(v, (int, float))})
        run.summary.update({"real/return_mean": results["real_mean"],
                            "real/return_std": results["real_std"],
                            "dream/return_mean": results["dream_mean"],
                            "dream_real_gap": results["dream_real_gap"],
                            **{f"real/{k}": results[k] for k in C_FIDELITY_KEYS}})
        if results.get("tau_table"):
            import wandb

            rows = [[r["tau"], r["dream_mean"], r["real_mean"]] for r in results["tau_table"]]
            run.log({"tau_table": wandb.Table(columns=["tau", "dream_mean", "real_mean"],
                                              data=rows)})
    finally:
        run.finish()


def main(cfg: Namespace) -> None:
    from rich.progress import Progress

    from jepa_wm.contract import STAGE, input_folders
    from jepa_wm.controller import ControllerFile
    from jepa_wm.controller.cmaes import check_config, make_dream
    from jepa_wm.controller.evaluate import evaluate, stage_wall_times, summary_line
    from jepa_wm.envs import EnvSettings
    from jepa_wm.io import UserError, claim, is_done, mark_done, read_json, write_json
    from jepa_wm.memory import latents_store_path
    from jepa_wm.stages.train_controller import load_parts

    start = time.time()
    out = Path(cfg.out)
    h = config_hash(cfg)
    if is_done(out, h):
        print(f"evaluate: {out} is complete for this config (hash {h}); nothing to do")
        return
    if cfg.evaluate.episodes < 1 or cfg.evaluate.dream_episodes < 1:
        raise UserError("evaluate.episodes and evaluate.dream_episodes: accepted: >= 1")
    check_config(cfg.controller_train)
    if cfg.fidelity and not Path(cfg.fidelity).exists():  # before any episode is played
        raise UserError(f"{cfg.fidelity}: not found; run `jepa-wm fidelity` first, or leave "
                        "--fidelity out")
    for tau in cfg.evaluate.taus:
        if not tau > 0:
            raise UserError(f"evaluate.taus: {tau}; accepted: temperatures > 0")
    memory, vision, latents, store = load_parts(cfg)
    controller = ControllerFile.load(cfg.controller)
    controller.check_fits(memory, cfg.controller)
    dream = make_dream(cfg.controller_train, memory, latents, store)
    claim(out, h, "evaluate")  # another config's tau-table CMA-ES runs are never resumed
    with Progress(transient=True) as bar:
        task = bar.add_task("real episodes", total=cfg.evaluate.episodes)
        results = evaluate(cfg.evaluate, cfg.seed, EnvSettings.of(cfg), vision, memory,
                           controller, dream, on_episode=lambda job, ret: bar.advance(task))
    if cfg.evaluate.taus:
        results["tau_table"] = tau_table(cfg, memory, vision, latents, store, out)
    # the stages this one read, found through its own path flags (the stage table's)
    flags = {flag: getattr(cfg, flag, None) for flag in STAGE["evaluate"].reads}
    flags["data"] = latents_store_path(latents, cfg.data)
    folders = input_folders("evaluate", flags)
    wall = stage_wall_times(folders)
    rounds = folders.get("iterate", out) / "rounds.json"  # C and M of iterative training
    if rounds.exists() and read_json(rounds):
        results["iterate"] = read_json(rounds)
    wall["evaluate"] = time.time() - start
    if cfg.fidelity:
        results["fidelity"] = read_json(cfg.fidelity)
    results.update(seed=cfg.seed, variant=cfg.variant, experiment=cfg.experiment,
                   env=cfg.env, config_hash=h, controller_fitness=controller.fitness,
                   wall_time=wall)
    write_json(out / "results.json", results)
    log_results(cfg, out, results)
    mark_done(out, h, wall_time=wall["evaluate"])
    print("evaluate: " + summary_line(results))
