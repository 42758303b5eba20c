"""``jepa-wm fidelity --config ... --memory CKPT --latents DIR --out DIR``: how faithful M's
dream is, on the held-out episodes M never trained on, before CMA-ES is spent on it (death
calibration, the data policy's survival in the dream against the game, open-loop error;
``jepa_wm.fidelity``). Writes ``fidelity.json`` and prints the headline figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--memory", type=str, required=True, help="M checkpoint (final.ckpt).")
    parser.add_argument("--latents", type=str, required=True, help="Latent set of M's V.")
    parser.add_argument("--out", type=str, required=True, help="Output folder.")
    parser.add_argument("--data", type=Optional[str], default=None,
                        help="Rollout store of the latents (default: the one their "
                             "meta.json names).")


def dream_settings(cfg: Namespace) -> dict:
    """The dream the figures are measured in: C's (τ, deaths) with the game's step limit."""
    cc = cfg.controller_train
    return {"tau": cc.tau, "done": cc.done, "done_threshold": cc.done_threshold,
            "start": cc.start, "precision": cc.precision, "kernel": cc.kernel,
            "max_steps": cfg.max_episode_steps or 2100,
            "dreams": cfg.evaluate.fidelity_dreams, "max_hold": cfg.max_hold,
            "hold_episodes": cfg.evaluate.fidelity_hold_episodes}


def config_hash(cfg: Namespace) -> str:
    """What the figures depend on: the dream settings and the seed (the stage table's
    keys) and M."""
    from jepa_wm.contract import identity
    from jepa_wm.stages.train_memory import upstream_hash

    return identity("fidelity", cfg, upstream=upstream_hash(Path(cfg.memory).parent))


def summary_line(f: dict) -> str:
    hold = ""
    if "hold_survival_ratio_max" in f:
        a = str(f["hold_survival_action_max"])
        hold = (f", holding action {a} dream {f['hold_survival_dream'][a]:.0f} vs real "
                f"{f['hold_survival_real'][a]:.0f} (ratio {f['hold_survival_ratio_max']:.2f})")
    return (f"death sum {f['death_sum_per_episode']:.2f}/episode (observed "
            f"{f['deaths_per_episode']:.2f}), policy survival dream "
            f"{f['policy_survival_dream']:.0f} vs real {f['policy_survival_real']:.0f} "
            f"(ratio {f['policy_survival_ratio']:.2f}){hold}, open-loop mse@10 "
            f"{f['open_loop_mse_10']:.3f} vs copy {f['copy_mse_10']:.3f}")


def check_settings(cfg: Namespace) -> None:
    """One-line errors for fidelity settings no measurement can use (before anything is
    written: the fidelity stage, and iterate, which measures each round's M)."""
    from jepa_wm.io import UserError

    settings = dream_settings(cfg)
    if settings["dreams"] < 1:
        raise UserError(f"evaluate.fidelity_dreams: {settings['dreams']}; accepted: >= 1")
    if settings["hold_episodes"] < 0:
        raise UserError(f"evaluate.fidelity_hold_episodes: {settings['hold_episodes']}; "
                        "accepted: >= 0 (0 = no hold-one-action episodes)")


def fidelity_dream(cfg: Namespace, memory, latents, store):
    """The dream of ``dream_settings(cfg)`` on ``memory``, started as C's dreams start."""
    from jepa_wm.dream import Dream, dream_starts

    settings = dream_settings(cfg)
    starts, sigma = dream_starts(latents, memory, settings["start"], store)
    return Dream(memory, starts, tau=settings["tau"], done=settings["done"],
                 reward="survival", max_steps=settings["max_steps"], start_sigma=sigma,
                 done_threshold=settings["done_threshold"], precision=settings["precision"],
                 kernel=settings["kernel"])


def real_holds(cfg: Namespace) -> dict | None:
    """The real lengths of each action held for a whole episode (``fidelity.
    real_hold_lengths`` in the run's env, ``evaluate.fidelity_hold_episodes`` per action),
    or None when that is 0."""
    from jepa_wm.fidelity import real_hold_lengths

    settings = dream_settings(cfg)
    if not settings["hold_episodes"]:
        return None
    return real_hold_lengths(cfg.env, cfg.image_size, cfg.frame_skip, settings["max_steps"],
                             settings["hold_episodes"], cfg.seed)


def measure_memory(cfg: Namespace, memory, latents, store, episodes,
                   metrics_file: Path | None = None) -> dict:
    """Every fidelity figure of ``memory`` on the held-out ``episodes`` of ``store``, in the
    dream of ``dream_settings(cfg)``, plus M's validation losses from ``metrics_file``."""
    from jepa_wm.controller import single_thread
    from jepa_wm.fidelity import measure
    from jepa_wm.io import read_json

    settings, hold_real = dream_settings(cfg), real_holds(cfg)
    dream = fidelity_dream(cfg, memory, latents, store)
    with single_thread():
        figures = measure(memory, dream, latents, store, episodes, settings["max_hold"],
                          settings["dreams"], seed=cfg.seed, hold_real=hold_real)
    metrics = read_json(metrics_file) if metrics_file and metrics_file.exists() else {}
    figures.update({k: metrics[k] for k in ("val_gmm_nll", "val_done_loss", "val_reward_loss",
                                             "final_gmm_nll") if k in metrics})
    return figures


def main(cfg: Namespace) -> None:

    from jepa_wm.controller import load_memory_checked
    from jepa_wm.data import RolloutStore
    from jepa_wm.io import UserError, claim, is_done, mark_done, write_json
    from jepa_wm.memory import latents_store_path, load_latents
    from jepa_wm.tracking import wandb_run

    start = time.time()
    out = Path(cfg.out)
    h = config_hash(cfg)
    if is_done(out, h) and (out / "fidelity.json").exists():
        print(f"fidelity: {out} is complete for this config (hash {h}); nothing to do")
        return
    check_settings(cfg)
    latents = load_latents(cfg.latents)
    memory = load_memory_checked(cfg.memory, latents=latents)
    store = RolloutStore(latents_store_path(latents, cfg.data))
    episodes = memory.extra.get("val_episodes")
    if not episodes:
        raise UserError(f"{cfg.memory}: M has no held-out episodes (memory_train."
                        "val_fraction is 0, or M predates the split); retrain M with "
                        "val_fraction > 0")
    claim(out, h, "fidelity")  # (after every input check: bad input moves nothing)
    figures = measure_memory(cfg, memory, latents, store, episodes,
                             Path(cfg.memory).parent / "metrics.json")
    figures["wall_time"] = time.time() - start
    write_json(out / "fidelity.json", figures)
    run = wandb_run(cfg, "fidelity", out)
    try:
        run.summary.update({f"fidelity/{k}": v for k, v in figures.items()
                            if isinstance(v, (int, float))})
    finally:
        run.finish()
    mark_done(out, h, wall_time=figures["wall_time"])
    print("fidelity: " + summary_line(figures))
