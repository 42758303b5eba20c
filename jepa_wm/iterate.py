"""Iterative training (Ha & Schmidhuber 2018, sec. 5): the dream-trained C plays the real
game, M learns from those episodes, and a new C is trained in the corrected dream.

A C trained only in the dream finds the dream's errors: on DoomTakeCover the failing
seeds' C run to a wall and stay there (83% MOVE_RIGHT), which M, trained on random play
that rarely lingers at a wall, rates safe (dream 867) and the game does not (223). One
round puts C's own states into M's data. C never sees a real reward: the real episodes only
feed M.

Each round ``k`` (folder ``round-k/`` of the stage):

1. ``data/``: ``iterate.episodes`` real episodes played by round k-1's C (V, M and C in the
   loop; a random held action, as the data policy's, started with chance
   ``iterate.epsilon`` at each step not already in one), game state recorded when the env
   has it;
2. ``latents/``: those frames encoded with the run's V;
3. ``memory/``: M trained further from round k-1's weights for ``iterate.memory_epochs``
   epochs (a fresh Adam at ``iterate.memory_lr``, by default M's own rate) over the run's
   training episodes plus every round's new ones; the run's held-out episodes stay held
   out (the fidelity figures stay comparable across rounds);
4. ``controller/``: C trained from scratch in the new M's dream, ``controller_train`` as
   in the run (its real checks included); with ``iterate.worlds: all``, in the dreams of
   every M so far, the new M as its memory.

Every step resumes (collect by episode, M from ``last.ckpt``, CMA-ES by generation) and a
finished step is skipped. Nothing in a round depends on when it runs: the collection seed
of round k is derived from the run's seed and k.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jepa_wm.io import UserError

#: Store seeds of the rounds' collections: far from the run's own (0..) and the evaluation's.
ROUND_SEED_BASE = 500_000
STEP_DONE = "iterate-step"  # the DONE.json hash of a finished step inside a round


def check_config(ic) -> None:
    """One line naming the bad key of the ``iterate`` section."""
    if ic.rounds < 0:
        raise UserError(f"iterate.rounds: {ic.rounds}; accepted: 0 (off) or more")
    if ic.episodes < 1:
        raise UserError(f"iterate.episodes: {ic.episodes}; accepted: >= 1")
    if not 0.0 <= ic.epsilon <= 1.0:
        raise UserError(f"iterate.epsilon: {ic.epsilon}; accepted: 0 to 1")
    if ic.memory_epochs < 1:
        raise UserError(f"iterate.memory_epochs: {ic.memory_epochs}; accepted: >= 1")
    if ic.workers < 1:
        raise UserError(f"iterate.workers: {ic.workers}; accepted: >= 1")
    if ic.memory_lr is not None and not ic.memory_lr > 0:
        raise UserError(f"iterate.memory_lr: {ic.memory_lr}; accepted: null (M's own lr) or "
                        "a number > 0")


def round_seed(seed: int, k: int) -> int:
    """The store seed (the env seeds) of round ``k``'s collection in a run of seed
    ``seed``. The policy's own noise (z samples, random holds) is seeded by ``k`` alone,
    ``ROUND_SEED_BASE + k``, per episode: the env seeds already differ between runs."""
    return ROUND_SEED_BASE + 1000 * seed + k


def memory_episodes(cfg, memory, memory_path, store) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` episodes of the run's ``store`` that M was fitted and held out on
    (``memory_split``), checked against the held-out episodes M recorded: the rounds keep
    them held out, so the fidelity figures stay comparable."""
    from jepa_wm.memory import memory_split

    train, val = memory_split(store, cfg.memory_train, cfg.seed)
    if sorted(val.tolist()) != sorted(memory.extra.get("val_episodes", [])):
        raise UserError(f"{memory_path}: its held-out episodes are not this config's split "
                        "(memory_train.val_fraction, max_frames or seed changed); retrain M")
    return train, val


def round_memory(path: Path, ic):
    """Round k-1's M from ``path``, to be trained further with a fresh Adam at
    ``iterate.memory_lr`` (None: M's own ``lr``)."""
    from jepa_wm.memory import load_memory

    module = load_memory(path).train()
    if ic.memory_lr is not None:
        module.hparams.lr = ic.memory_lr
    return module


def fit_round_memory(cfg, memory_path: Path, store, latents, episodes: np.ndarray,
                     val_eps: np.ndarray, out: Path, done_hash: str) -> None:
    """Step 3 of a round: the M at ``memory_path`` trained ``iterate.memory_epochs`` more
    epochs on ``episodes`` of ``store``/``latents`` (at ``iterate.memory_lr``) into ``out``."""
    from jepa_wm.memory import fit_memory
    from jepa_wm.tracking import lightning_logger

    tc = copy.deepcopy(cfg.memory_train)
    tc.max_epochs, tc.max_steps = cfg.iterate.memory_epochs, -1
    fit_memory(round_memory(memory_path, cfg.iterate), tc, cfg.seed, store, latents, episodes,
               val_eps, out, done_hash, logger=lightning_logger(cfg, "train-memory", out))


@dataclass
class Models:
    """What one round hands the next: M (and its checkpoint), C, and the M's of the rounds
    before (round 0's first: the worlds of ``iterate.worlds: all``)."""

    memory: object
    memory_path: Path
    controller: object
    earlier: tuple = ()


def run_round(cfg, k: int, vision, vision_ckpt: Path, prev: Models, stores: list, sets: list,
              train_eps: np.ndarray, val_eps: np.ndarray, base_latents, base_store,
              folder: Path, times: dict) -> Models:
    """Round ``k`` into ``folder`` (see the module docstring); appends its store and latent
    set to ``stores``/``sets`` and adds its seconds per step to ``times``."""
    import torch

    from jepa_wm.controller import ControllerFile, single_thread
    from jepa_wm.controller.cmaes import Trainer, make_dream
    from jepa_wm.controller.policy import ControllerPolicy
    from jepa_wm.data import RolloutStore
    from jepa_wm.data.collect import collect
    from jepa_wm.data.concat import ConcatLatents, ConcatStore
    from jepa_wm.envs import EnvSettings
    from jepa_wm.io import is_done, mark_done
    from jepa_wm.memory import load_latents, load_memory
    from jepa_wm.stages.train_controller import real_player
    from jepa_wm.vision.encode import encode_store

    ic = cfg.iterate

    def timed(key, fn, *a, **kw):
        start = time.time()
        out = fn(*a, **kw)
        times[key] = times.get(key, 0.0) + time.time() - start
        return out

    folder.mkdir(parents=True, exist_ok=True)
    policy = ControllerPolicy(vision, prev.memory, prev.controller, seed=ROUND_SEED_BASE + k,
                              epsilon=ic.epsilon, max_hold=cfg.max_hold)
    with torch.no_grad(), single_thread():
        timed("collect", collect, cfg.env, folder / "data", ic.episodes,
              seed=round_seed(cfg.seed, k), workers=ic.workers, image_size=cfg.image_size,
              frame_skip=cfg.frame_skip, max_episode_steps=cfg.max_episode_steps,
              policy=policy, progress=False)
    timed("encode", encode_store, vision_ckpt, folder / "data", folder / "latents",
          show_progress=False)
    stores.append(RolloutStore(folder / "data"))
    sets.append(load_latents(folder / "latents"))
    store, latents = ConcatStore(stores), ConcatLatents(sets)
    new = np.concatenate([store.episodes_of(i) for i in range(1, len(stores))])
    mem_dir = folder / "memory"
    if not is_done(mem_dir, STEP_DONE):
        timed("train-memory", fit_round_memory, cfg, prev.memory_path, store, latents,
              np.concatenate([train_eps, new]), val_eps, mem_dir, STEP_DONE)
        mark_done(mem_dir, STEP_DONE)
    memory = load_memory(mem_dir / "final.ckpt")
    cc = cfg.controller_train
    ctl_dir = folder / "controller"
    earlier = (*prev.earlier, prev.memory)
    if not is_done(ctl_dir, STEP_DONE):
        dream = [make_dream(cc, memory, base_latents, base_store)]
        if ic.worlds == "all":  # the earlier M's dreams too, the new M as C's memory
            dream += [make_dream(cc, m, base_latents, base_store, observer=memory)
                      for m in earlier]
        real = real_player(EnvSettings.of(cfg), vision, memory, cc.include_cell, cc.workers)
        timed("train-controller", Trainer(cc, cfg.seed, memory, dream, real, ctl_dir).run)
        mark_done(ctl_dir, STEP_DONE)
    return Models(memory, mem_dir / "final.ckpt", ControllerFile.load(ctl_dir / "best.npz"),
                  earlier)


def round_summary(folder: Path, store) -> dict:
    """What a finished round did: its collection and C's search."""
    from jepa_wm.io import read_json

    lengths = store.episode_lengths
    history = read_json(folder / "controller" / "history.json")
    return {"episodes": int(store.num_episodes), "frames": int(store.num_frames),
            "length_mean": float(lengths.mean()), "length_std": float(lengths.std()),
            "policy": store.meta["policy"],
            "dream_fitness": float(max(h["best_so_far"] for h in history)),
            "real_checks": [h["real_mean"] for h in history if "real_mean" in h]}
