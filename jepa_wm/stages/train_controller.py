"""``jepa-wm train-controller --config ... --vision CKPT --memory CKPT --latents DIR --out
DIR``: CMA-ES over C in M's dream (``controller_train.where: dream``, the whole population
one batched rollout) or in the real env (``where: real``). Resumes from ``cmaes.npz`` (arrays, no pickle);
writes ``best.npz``, ``history.json``, ``DONE.json``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--vision", type=Optional[str], default=None,
                        help="V checkpoint (needed for where=real and the real checks).")
    parser.add_argument("--memory", type=str, required=True, help="M checkpoint (final.ckpt).")
    parser.add_argument("--latents", type=str, required=True,
                        help="Latent set (dream starting latents).")
    parser.add_argument("--out", type=str, required=True, help="Output folder for C.")
    parser.add_argument("--data", type=Optional[str], default=None,
                        help="Rollout store of the latents (default: the one their "
                             "meta.json names).")


def config_hash(cfg: Namespace) -> str:
    """What C depends on: its keys in the stage table (its section, the env, the seed) and
    M."""
    from jepa_wm.contract import identity
    from jepa_wm.stages.train_memory import upstream_hash

    return identity("train-controller", cfg, upstream=upstream_hash(Path(cfg.memory).parent))


def real_player(env, vision, memory, include_cell: bool, workers: int):
    """``play(params (k, n), episodes, seed) -> dict`` running k x episodes real episodes of
    ``env`` (``EnvSettings``; candidate-major) with seeds ``seed, seed + 1, ...``."""
    import numpy as np
    import torch

    from jepa_wm.controller.real import play_real
    from jepa_wm.nets.controller import ControllerPopulation, controller_input_dim

    input_dim = controller_input_dim(memory.latent_dim, memory.net.hidden_size, include_cell)

    def play(params, episodes: int, seed: int) -> dict:
        population = ControllerPopulation(torch.as_tensor(np.asarray(params)), input_dim,
                                          memory.action)
        owners = np.repeat(np.arange(len(params)), episodes)
        seeds = seed % 1_000_000_000 + np.arange(len(owners))
        return play_real(env, vision, memory, population, owners, seeds, include_cell,
                         workers)

    return play


def load_parts(cfg: Namespace):
    """M (checked against V), V (or None), the latent set and its rollout store."""
    from jepa_wm.controller import load_memory_checked
    from jepa_wm.data import RolloutStore
    from jepa_wm.memory import latents_store_path, load_latents

    latents = load_latents(cfg.latents)
    memory = load_memory_checked(cfg.memory, cfg.vision, latents)
    vision = None
    if cfg.vision is not None:
        from jepa_wm.vision import load_vision

        vision = load_vision(cfg.vision)
    store = RolloutStore(latents_store_path(latents, cfg.data))
    return memory, vision, latents, store


def main(cfg: Namespace) -> None:

    from jepa_wm.controller.cmaes import Trainer, check_config, make_dream
    from jepa_wm.envs import EnvSettings
    from jepa_wm.io import UserError, claim, is_done, mark_done
    from jepa_wm.tracking import wandb_run

    start = time.time()
    cc = cfg.controller_train
    check_config(cc)
    h = config_hash(cfg)
    out = Path(cfg.out)
    memory, vision, latents, store = load_parts(cfg)  # checks V, M and latents agree
    if is_done(out, h):  # (so a finished folder with mismatched inputs is refused too)
        print(f"train-controller: {out} is complete for this config (hash {h}); nothing to do")
        return
    if cc.where == "real" and vision is None:
        raise UserError("train-controller: controller_train.where real needs --vision CKPT")
    dream = make_dream(cc, memory, latents, store) if cc.where == "dream" else None
    claim(out, h, "train-controller")  # another config's CMA-ES state is never resumed
    real = None if vision is None else real_player(EnvSettings.of(cfg), vision, memory,
                                                   cc.include_cell, cc.workers)
    run = wandb_run(cfg, "train-controller", out)
    try:
        state = Trainer(cc, cfg.seed, memory, dream, real, out, run).run()
    finally:
        run.finish()
    mark_done(out, h, wall_time=time.time() - start, best_fitness=state["best_fitness"],
              generations=state["generation"])
    last = state["history"][-1] if state["history"] else {}
    print(f"train-controller: {state['generation']} generations in the {cc.where}, best "
          f"{state['best_fitness']:.1f}, last mean {last.get('mean', float('nan')):.1f} -> "
          f"{out}/best.npz")
