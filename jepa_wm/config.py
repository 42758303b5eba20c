"""The experiment schema: one YAML shape shared by every stage.

An experiment file sets the env, budgets and sizes; a variant file is a small delta on top
(``--config EXPERIMENT --config VARIANT``, layered left to right). Parts (the vision model,
the memory model, an encoder) are chosen with ``class_path``/``init_args``. Every stage's
parser holds the whole schema, so any experiment file parses in any stage and an unknown
key fails at parse time with the key named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace


@dataclass
class TrainConfig:
    """Trainer settings for a Lightning stage (V or M).

    Args:
        max_epochs: Passes over the training data.
        max_steps: Optimiser steps; -1 means no limit (``max_epochs`` decides).
        batch_size: Samples per batch (frames for V; for M, lanes of episode chunks).
        num_workers: DataLoader worker processes (0 = load in the main process); V only: M's
            episode-chunk stream (one ordered stream of lanes) runs in the main process.
        val_fraction: Fraction of episodes held out for validation diagnostics.
        max_frames: Use at most this many stored frames (None = all).
        accelerator: Lightning accelerator: ``cpu`` (default), ``auto`` or ``gpu``.
        devices: Lightning devices (``auto``, a count, or a list).
        strategy: Lightning strategy, e.g. ``auto`` or ``ddp`` for several GPUs or nodes.
        num_nodes: Nodes for multi-node DDP.
        precision: Lightning precision, e.g. ``32-true`` or ``bf16-mixed``.
        threads: torch CPU threads (None = torch's default).
        checkpoint_every: Save ``last.ckpt`` every this many steps: where a killed training
            resumes (exactly: the data and noise of a step depend on the seed and the step
            alone, ``jepa_wm.steps``). Speed only: it never changes the weights.
        max_flops: V only: a compute budget. V trains ``floor(max_flops / F)`` steps, F
            the FLOPs of one of its training steps (forward and backward at this batch
            size, counted by torch's FlopCounterMode), whatever ``max_epochs`` and
            ``max_steps`` say: every V the same FLOPs. Deterministic.
        max_time: V only: seconds of training, after which V stops (Lightning's
            ``max_time``; ``max_epochs``/``max_steps`` still end it earlier): every V the
            same wall-clock seconds on this machine. Not reproducible across machines or
            loads; the steps it reached are recorded.
        pack: M only: a lane whose episode ends inside a chunk goes straight on with its
            next episode (the LSTM state zeroed at that step) instead of running the rest of
            the chunk as padding. On 1,000 take-cover episodes in 500-step chunks 40% of
            the slots are padding, so an epoch takes ~1.6x fewer batches of the same cost;
            each batch then holds more real steps, and an epoch fewer optimiser steps.
    """

    max_epochs: int = 1
    max_steps: int = -1
    batch_size: int = 64
    num_workers: int = 0
    val_fraction: float = 0.1
    max_frames: int | None = None
    accelerator: str = "cpu"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    threads: int | None = None
    checkpoint_every: int = 250
    max_flops: float | None = None
    max_time: float | None = None
    pack: bool = False


def check_train_config(tc: Any, section: str) -> None:
    """Fail early, naming the key, on ``TrainConfig`` values no trainer can run with
    (``section`` is ``vision_train`` or ``memory_train``)."""
    from jepa_wm.io import UserError

    for key, value, ok, accepted in (
            ("max_epochs", tc.max_epochs, tc.max_epochs >= 1, "an integer >= 1"),
            ("max_steps", tc.max_steps, tc.max_steps == -1 or tc.max_steps >= 1,
             "-1 (no limit) or an integer >= 1"),
            ("batch_size", tc.batch_size, tc.batch_size >= 1, "an integer >= 1"),
            ("num_workers", tc.num_workers, tc.num_workers >= 0, "an integer >= 0"),
            ("max_frames", tc.max_frames, tc.max_frames is None or tc.max_frames >= 1,
             "null (all) or an integer >= 1"),
            ("threads", tc.threads, tc.threads is None or tc.threads >= 1,
             "null or an integer >= 1"),
            ("checkpoint_every", tc.checkpoint_every, tc.checkpoint_every >= 1,
             "an integer >= 1"),
            ("max_flops", tc.max_flops, tc.max_flops is None or tc.max_flops > 0,
             "null or a number > 0"),
            ("max_time", tc.max_time, tc.max_time is None or tc.max_time > 0,
             "null or seconds > 0")):
        if not ok:
            raise UserError(f"{section}.{key}: {value}; accepted: {accepted}")
    if section == "vision_train" and tc.pack:
        raise UserError("vision_train.pack: true; accepted: false (packing episodes into "
                        "chunks is for M: memory_train.pack)")
    if section != "vision_train":
        for key in ("max_flops", "max_time"):
            if getattr(tc, key) is not None:
                raise UserError(f"{section}.{key}: {getattr(tc, key)}; accepted: null (a "
                                "compute-matched budget is for V: vision_train.{key})"
                                .replace("{key}", key))


@dataclass
class ControllerConfig:
    """CMA-ES over the linear controller C (Ha & Schmidhuber 2018 settings by default).

    Args:
        where: Train ``dream`` (inside M, batched) or ``real`` (in the real env).
        generations: CMA-ES generations.
        popsize: Candidates per generation.
        rollouts: Rollouts per candidate; fitness is their mean return.
        sigma0: Initial CMA-ES step size.
        tau: Dream temperature (mixture logits / tau, sigmas * sqrt(tau)).
        max_steps: Step limit of one dream (and real) episode.
        include_cell: Feed the LSTM cell state c to C as well as h.
        done: ``threshold`` (done when M's hazard > ``done_threshold``, as the paper) or
            ``sample`` (a Bernoulli draw of the hazard every step).
        done_threshold: The hazard above which ``threshold`` ends a dream (the paper: 0.5).
        reward: Dream reward: ``head`` (M's reward head) or ``survival`` (+1 per step
            survived: the take-cover reward, so the return is the survival time).
        start: Dreams start from real latents of ``episode`` starts or ``random`` frames.
        real_check_every: Every this many generations the best C plays real episodes.
        real_check_episodes: Real episodes per check.
        workers: Real-env worker processes (``where: real`` and checks). Real play steps
            every env, then runs V, M and C for all of them in this process: 4 envs on 2
            cores play 1.3x the frames/s of 2 (``benchmarks/results/speed.md`` §2); a job's
            episode is the same at any count.
        precision: The dream's arithmetic: ``32`` (fp32) or ``bf16`` (M's two matmuls per
            step in bf16 on cached bf16 weights; state, gates and sampling stay fp32: 2x
            faster at the paper's M size on a CPU with AMX, ``benchmarks/results/
            dream_paper.md``). Used by CMA-ES, the evaluation dreams and the fidelity dreams.
        kernel: The dream step's elementwise work (the LSTM cell's nonlinearities, the
            mixture draw): ``eager`` torch ops, or ``fused``, two C++ kernels built with the
            machine's g++ on first use and cached (``jepa_wm.nets.fused``): the same numbers
            to float rounding, 1.4-1.8x faster per step at the paper's M size
            (``benchmarks/results/dream_paper.md``). Used wherever ``precision`` is.
        threads: torch CPU threads for CMA-ES's dreams (None = the process's count: all
            cores, or one per cell in a ``sweep --jobs 2``); real play always runs on one,
            its env workers take the other cores. A late generation of the solving budget
            on 2 quiet cores: 18.0 s at 1 thread, 10.5 s at 2
            (``benchmarks/results/generation.md``).
    """

    where: Literal["dream", "real"] = "dream"
    generations: int = 100
    popsize: int = 64
    rollouts: int = 16
    sigma0: float = 0.1
    tau: float = 1.15
    max_steps: int = 2100
    include_cell: bool = False
    done: Literal["threshold", "sample"] = "threshold"
    done_threshold: float = 0.5
    reward: Literal["head", "survival"] = "head"
    start: Literal["episode", "random"] = "episode"
    real_check_every: int = 10
    real_check_episodes: int = 4
    workers: int = 4
    precision: Literal["32", "bf16"] = "32"
    kernel: Literal["eager", "fused"] = "eager"
    threads: int | None = None


@dataclass
class EvaluateConfig:
    """Final evaluation of C.

    Args:
        episodes: Real-env episodes (fixed seeds).
        dream_episodes: Dreams at the training temperature.
        taus: Extra dream temperatures for the virtual-vs-actual table (empty = none).
        workers: Real-env worker processes (as ``controller_train.workers``).
        fidelity_dreams: Dreams of the data policy in the ``fidelity`` stage.
        fidelity_hold_episodes: Real episodes per action of the hold-one-action policies
            whose dream survival the ``fidelity`` stage sets against the game's
            (``fidelity.hold_survival``; Discrete envs; 0 = none).
    """

    episodes: int = 100
    dream_episodes: int = 1024
    taus: list[float] = field(default_factory=list)
    fidelity_dreams: int = 1024
    fidelity_hold_episodes: int = 16
    workers: int = 4


@dataclass
class IterateConfig:
    """Iterative training (Ha & Schmidhuber 2018, sec. 5; ``jepa_wm.iterate``): after C is
    trained in the dream, it plays the real game, M learns from those episodes, and a new C
    is trained in the corrected dream. C never sees a real reward.

    Args:
        rounds: Rounds of play, M training and C training (0 = off: the one-shot pipeline).
        episodes: Real episodes C plays per round (new env seeds, game state recorded).
        epsilon: Chance, at each step not already in one, of a random held action (1 to
            ``max_hold`` steps, as the data policy) instead of C's.
        memory_epochs: Epochs M trains further per round, from the last round's weights,
            over the run's training episodes plus every round's new ones.
        worlds: Where each round's new C trains: ``last``, the dream of the round's M (the
            paper), or ``all``, the dreams of every M of the run so far (round 0's and each
            round's, each candidate's rollouts shared out evenly), with the round's M as
            C's memory (``Dream(observer=...)``). A C trained in one M's dream is rated
            above its real score by that M most (``benchmarks/results/exploit.md``): a
            hole CMA-ES finds must then be in every M.
        memory_lr: Adam's learning rate for that further training (None = M's own
            ``lr``). Adam restarts each round: at M's full rate (1e-3) one round took the
            death sum on held-out random play from 1.18 to 1.91 per episode, at 1e-4 it
            stayed 1.18 (``docs/RESULTS.md``, session 10).
        workers: Real-env worker processes for C's episodes (as
            ``controller_train.workers``; the random data's collection uses the top-level
            ``workers``: with nothing to compute between steps, more envs do not help it).
    """

    rounds: int = 0
    episodes: int = 300
    epsilon: float = 0.05
    memory_epochs: int = 10
    memory_lr: float | None = None
    worlds: Literal["last", "all"] = "last"
    workers: int = 4


@dataclass
class WandbConfig:
    """Weights & Biases logging.

    Args:
        mode: ``offline`` (default: no account, ``wandb sync`` later), ``online`` or
            ``disabled``. The WANDB_MODE environment variable overrides it.
        project: W&B project name.
        entity: W&B entity (team or user); None = your default.
        dir: Where offline run folders go (None = the stage's output folder).
    """

    mode: str = "offline"
    project: str = "jepa_wm"
    entity: str | None = None
    dir: str | None = None


#: Default longest hold of the random data policy (Ha & Schmidhuber's Doom data: 1..10).
MAX_HOLD = 10


def experiment_parser(prog: str = "jepa-wm", description: str | None = None) -> ArgumentParser:
    """The schema every stage parses: data keys at top level, then one section per stage."""
    # not default_meta=False (deprecated in jsonargparse 4.44, gone in 5): these parses carry
    # no metadata keys either way (tests/test_cli.py checks it)
    p = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    p.add_argument("--config", action=ActionConfigFile,
                   help="YAML config file(s), layered left to right.")
    p.add_argument("--experiment", type=str, default="default", help="Experiment name.")
    p.add_argument("--variant", type=str, default="vae", help="Variant name (group in W&B).")
    p.add_argument("--sweep", type=Optional[str], default=None, help="Sweep name (W&B tag).")
    p.add_argument("--seed", type=int, default=0, help="Seed for data, training and C.")
    # data: what is collected (shared by every variant of one env, budget and seed)
    p.add_argument("--env", type=str, default="VizdoomTakeCover-v1",
                   help="Gymnasium env id (pixels from observations or render()).")
    p.add_argument("--image_size", type=int, default=64, help="Frames are resized to this.")
    p.add_argument("--frame_skip", type=int, default=1, help="Env steps per agent action.")
    p.add_argument("--max_episode_steps", type=Optional[int], default=None,
                   help="Episode step limit (None = the env's own; Doom adds 2100).")
    p.add_argument("--episodes", type=int, default=100, help="Random episodes to collect.")
    p.add_argument("--workers", type=int, default=2, help="Parallel envs for collection.")
    p.add_argument("--max_hold", type=int, default=MAX_HOLD,
                   help="The random data policy holds each action for 1..max_hold steps "
                        "(uniform), as Ha & Schmidhuber's Doom data (1..10). Long holds put "
                        "the states a held-action controller reaches (walls) in the data.")
    # parts and stage settings
    p.add_argument("--vision_model", type=Optional[torch.nn.Module], default=None,
                   help="The V model: class_path/init_args of a jepa_wm.vision module.")
    p.add_argument("--vision_train", type=TrainConfig, default=TrainConfig())
    p.add_argument("--memory_model", type=Optional[torch.nn.Module], default=None,
                   help="The M model: class_path/init_args (jepa_wm.memory.MDNRNNModule).")
    p.add_argument("--memory_train", type=TrainConfig, default=TrainConfig())
    p.add_argument("--controller_train", type=ControllerConfig, default=ControllerConfig())
    p.add_argument("--iterate", type=IterateConfig, default=IterateConfig())
    p.add_argument("--evaluate", type=EvaluateConfig, default=EvaluateConfig())
    p.add_argument("--wandb", type=WandbConfig, default=WandbConfig())
    return p




def to_dict(cfg: Namespace | dict) -> dict:
    """A plain, JSON-able dict of a (possibly nested) Namespace."""
    if isinstance(cfg, Namespace):
        cfg = cfg.as_dict()
    return {k: to_dict(v) if isinstance(v, (Namespace, dict)) else v for k, v in cfg.items()}


def data_hash(cfg: Namespace) -> str:
    """Identity of a rollout store (``contract.DATA_KEYS``: env, image size, frame skip,
    step limit, budget, seed, data policy)."""
    from jepa_wm.contract import identity

    return identity("collect", cfg)


#: Keys of a section that change how fast a stage runs, never what it computes: a stage
#: rerun with other values is the same stage (it skips or resumes).
SPEED_ONLY = ("threads", "num_workers", "workers", "checkpoint_every")


#: Options added to a part after run folders were made with it: at these values they
#: compute exactly what the part computed before the option existed, so they are left out of
#: a stage's identity and the older folders stay valid. Any other value is part of it.
NEUTRAL = {"rollout_discount": 1.0, "context_frames": 1, "predictor_dropout": 0.0,
           "vicreg_smooth": 0.0, "idm_weight": 0.0, "sigreg_weighting": "convex",
           "task_weight": 0.0, "task_input": "predicted", "z_noise": 0.0, "max_flops": None,
           "max_time": None, "precision": "32", "memory_lr": None, "worlds": "last",
           "pack": False, "kernel": "eager"}


def drop_neutral(value: Any) -> Any:
    """``value`` with every option at its ``NEUTRAL`` value left out, at any depth."""
    if isinstance(value, dict):
        return {k: drop_neutral(v) for k, v in value.items()
                if not (k in NEUTRAL and v == NEUTRAL[k])}
    return value


def semantic_section(value: Any) -> Any:
    """A config section as the plain values its result depends on (speed-only keys and
    options at their ``NEUTRAL`` values out)."""
    if isinstance(value, Namespace):
        return drop_neutral({k: v for k, v in to_dict(value).items() if k not in SPEED_ONLY})
    return value


