"""The stage contract in one place: every pipeline stage, the folder it writes, the stages
whose output it reads (through which path flag, which file), the config keys its result
depends on, and the run folder layout.

A stage's identity (the hash in its ``STAGE.json``/``DONE.json``) is ``identity(stage, cfg,
upstream)``: its own keys (speed-only keys left out) plus the identities of its inputs, so a
change anywhere upstream reaches every stage downstream.

The CLI, ``pipeline``, ``sweep``, ``report``, the wall-time code and the benchmarks read
this table; nothing else lists the stages or derives where a stage writes.

Layout (one experiment folder holds every variant and seed)::

    RUNS/<experiment>/data/<env>-seed<k>-<data hash>/rollouts/   shared by all variants
    RUNS/<experiment>/<variant>/seed<k>/{vision,latents,probe,memory,fidelity,controller,iterate,eval}/
    RUNS/<experiment>/<variant>/seed<k>/config.yaml              the resolved config
    RUNS/<experiment>/<variant>/seed<k>/pipeline.json            stage fingerprints, times
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    name: the CLI subcommand; help: its one-line description; folder: where it writes
    inside a cell (``None`` for collect, which writes the shared store's ``rollouts/``);
    reads: path flag -> (upstream stage, file in that stage's folder, ``""`` = the folder);
    keys: the config keys (sections or dotted keys) its result depends on, besides its
    inputs; revision: raised when a code change alters the stage's result for the same
    config, so folders made by the old code are redone, never resumed (1, the first, is
    left out of the identity).
    """

    name: str
    help: str
    folder: str | None
    reads: dict[str, tuple[str, str]] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    revision: int = 1

    @property
    def revision_entry(self) -> dict[str, int]:
        """What the revision adds to a hash of this stage's result (nothing at 1)."""
        return {"revision": self.revision} if self.revision > 1 else {}

    @property
    def upstream(self) -> tuple[str, ...]:
        """The stages whose output this one reads, in pipeline order."""
        used = {stage for stage, _ in self.reads.values()}
        return tuple(s for s in STAGE_ORDER if s in used)


#: What makes a rollout store: env, frames, step limit, budget, seed and data policy.
DATA_KEYS = ("env", "image_size", "frame_skip", "max_episode_steps", "episodes", "seed",
             "max_hold")
#: The real env a controller plays.
ENV_KEYS = ("env", "image_size", "frame_skip", "max_episode_steps")
#: The dream the fidelity figures are measured in: C's temperature and death rule, the step
#: limit, the number of dreams, the data policy played in them and the real hold episodes.
DREAM_KEYS = ("controller_train.tau", "controller_train.done", "controller_train.done_threshold",
              "controller_train.start", "controller_train.precision", "controller_train.kernel",
              "max_episode_steps", "evaluate.fidelity_dreams", "max_hold",
              "evaluate.fidelity_hold_episodes")

_STORE = ("collect", "")
_V = ("train-vision", "final.ckpt")
_Z = ("encode", "")
_M = ("train-memory", "final.ckpt")

PIPELINE: tuple[Stage, ...] = (
    Stage("collect", "Collect episodes of a real env into a rollout store.", None,
          keys=DATA_KEYS),
    Stage("train-vision", "Train a vision model V (VAE, JEPA or random) on a rollout store.",
          "vision", {"data": _STORE}, keys=("vision_model", "vision_train", "seed")),
    Stage("encode", "Encode every stored frame with a trained V into a latent set.",
          "latents", {"vision": _V, "data": _STORE}),
    Stage("probe", "Fit linear probes of what V's latents know about the game state "
          "(held-out R², accuracy).", "probe", {"latents": _Z, "data": _STORE},
          keys=("vision_train.val_fraction", "seed"),
          revision=2),  # 2: death_next (old probes are redone, in seconds; no stage reads them)
    Stage("train-memory", "Train the MDN-RNN M on a latent set.",
          "memory", {"latents": _Z, "data": _STORE},
          keys=("memory_model", "memory_train", "seed"),
          revision=2),  # 2: every step weighs the same in every batch (MDNRNNModule.losses)
    Stage("fidelity", "Measure how faithful M's dream is on held-out episodes (before "
          "CMA-ES).", "fidelity", {"memory": _M, "latents": _Z, "data": _STORE},
          keys=(*DREAM_KEYS, "seed")),
    Stage("train-controller", "Train the linear controller C with CMA-ES in the dream or the "
          "real env.", "controller", {"vision": _V, "memory": _M, "latents": _Z,
                                      "data": _STORE},
          keys=("controller_train", "seed", *ENV_KEYS)),
    Stage("iterate", "Iterative training: C plays the real game, M learns from it, a new C "
          "is trained in the corrected dream (iterate.rounds; 0 passes C and M through).",
          "iterate", {"vision": _V, "memory": _M,
                      "controller": ("train-controller", "best.npz"), "latents": _Z,
                      "data": _STORE, "fidelity": ("fidelity", "fidelity.json")},
          keys=("iterate", "memory_train", "controller_train", "seed", *ENV_KEYS,
                *DREAM_KEYS)),
    Stage("evaluate", "Evaluate C in the real env and in the dream; write results.json.",
          "eval", {"vision": _V, "memory": ("iterate", "final.ckpt"),
                   "controller": ("iterate", "best.npz"), "latents": _Z, "data": _STORE,
                   "fidelity": ("iterate", "fidelity.json")},
          keys=("evaluate", "controller_train", "seed", *ENV_KEYS),
          revision=3),  # 2, 3: M's death calibration on C's real episodes, death rates
)

STAGE = {s.name: s for s in PIPELINE}
STAGE_ORDER = tuple(s.name for s in PIPELINE)

#: Commands that are not pipeline stages.
TOOLS = {
    "inspect": "Print a rollout store's summary and verify every shard's checksum.",
    "run": "Run every stage of one variant and seed, skipping what is done.",
    "sweep": "Run a grid of variants x seeds and write its report.",
    "report": "Tabulate and plot finished runs of an experiment.",
}

#: Every CLI subcommand and its help, in the order ``jepa-wm --help`` lists them.
COMMANDS = {"collect": STAGE["collect"].help, "inspect": TOOLS["inspect"],
            **{s.name: s.help for s in PIPELINE[1:]},
            **{k: v for k, v in TOOLS.items() if k != "inspect"}}


def identity(stage: str, cfg: Any, upstream: str = "") -> str:
    """The identity of ``stage``'s result: a hash of its ``keys`` in ``cfg`` (speed-only keys
    left out) chained to ``upstream``, the identities of its inputs."""
    from jepa_wm.config import NEUTRAL, semantic_section
    from jepa_wm.io import hash_obj

    values = {}
    for k in STAGE[stage].keys:
        value, name = semantic_section(cfg[k]), k.rsplit(".", 1)[-1]
        if not ("." in k and name in NEUTRAL and value == NEUTRAL[name]):  # a single key
            values[k] = value  # at its NEUTRAL value is left out, as within a section
    return hash_obj({"stage": stage, "upstream": upstream, **values,
                     **revision_entry(stage, values)})


def revision_entry(stage: str, values: dict) -> dict[str, int]:
    """The code revisions in a hash of ``stage``'s result for config ``values`` (a mapping
    with the stage's keys): the stage's own, and the ones that apply to some configs only.
    Both the identity and ``pipeline.fingerprint`` carry them, so ``run`` never skips a stage
    on a record made by the old code."""
    return {**STAGE[stage].revision_entry, **_task_windows(stage, values)}


def _task_windows(stage: str, values: dict) -> dict[str, int]:
    """A JEPA with task heads trains on windows that start on an episode's last frame too
    (before 2026-12-05 its one-step windows never held the step that ends an episode, so its
    death head saw no death): a revision of train-vision for those V's only."""
    spec = values.get("vision_model") if stage == "train-vision" else None
    weight = ((spec or {}).get("init_args") or {}).get("task_weight") or 0
    return {"task_windows": 2} if weight > 0 else {}


def safe_name(text: str) -> str:
    """A folder-safe version of an env id or label (``ALE/Pong-v5`` -> ``ALE_Pong-v5``)."""
    return "".join(c if c.isalnum() or c in "-_.=+," else "_" for c in str(text))


@dataclass(frozen=True)
class RunPaths:
    """Where one variant+seed run (a sweep "cell") reads and writes."""

    root: Path   # RUNS/<experiment>
    store: Path  # RUNS/<experiment>/data/<env>-seed<k>-<hash>
    cell: Path   # RUNS/<experiment>/<variant>/seed<k>

    @property
    def rollouts(self) -> Path:
        return self.store / "rollouts"

    def stage_dir(self, stage: str) -> Path:
        """The output folder of ``stage``."""
        folder = STAGE[stage].folder
        return self.rollouts if folder is None else self.cell / folder

    def inputs(self, stage: str) -> dict[str, Path]:
        """The path flags of ``stage`` (``--data``, ``--memory``, ...) in this run."""
        return {flag: self.stage_dir(up) / name if name else self.stage_dir(up)
                for flag, (up, name) in STAGE[stage].reads.items()}


def run_paths(cfg: Any, runs: str | os.PathLike) -> RunPaths:
    """The folders of the run described by the resolved ``cfg`` under ``runs``."""
    root = Path(runs) / safe_name(cfg.experiment)
    store = root / "data" / f"{safe_name(cfg.env)}-seed{cfg.seed}-{identity('collect', cfg)}"
    cell = root / safe_name(cfg.variant) / f"seed{cfg.seed}"
    return RunPaths(root=root, store=store, cell=cell)


def input_folders(stage: str, flags: dict[str, Any]) -> dict[str, Path]:
    """Upstream stage -> the folder it wrote, from ``stage``'s path flags (``flags``: flag ->
    path or None; a file flag names a file inside its stage's folder). A folder is named by
    the stage its ``STAGE.json`` says wrote it (``evaluate`` given ``controller/best.npz``
    directly reads train-controller's folder, not iterate's), else by the table."""
    import json

    out = {}
    for flag, (up, name) in STAGE[stage].reads.items():
        if flags.get(flag):
            path = Path(flags[flag])
            folder = path.parent if name else path
            try:
                up = json.loads((folder / "STAGE.json").read_text()).get("stage", up)
            except (OSError, ValueError):
                pass
            out.setdefault(up, folder)
    return out


def stage_folder(cell: str | os.PathLike, stage: str) -> Path:
    """Where ``stage`` writes inside the cell folder ``cell`` (not for collect)."""
    return Path(cell) / STAGE[stage].folder
