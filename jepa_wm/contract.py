"""The stage contract in one place: every pipeline stage, the folder it writes, the stages
whose output it reads (through which path flag, which file), and the run folder layout.

The CLI, ``pipeline``, ``sweep``, ``report``, the wall-time code and the benchmarks read
this table; nothing else lists the stages or derives where a stage writes.

Layout (one experiment folder holds every variant and seed)::

    RUNS/<experiment>/data/<env>-seed<k>-<data hash>/rollouts/   shared by all variants
    RUNS/<experiment>/<variant>/seed<k>/{vision,latents,memory,fidelity,controller,eval}/
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
    reads: path flag -> (upstream stage, file in that stage's folder, ``""`` = the folder).
    """

    name: str
    help: str
    folder: str | None
    reads: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def upstream(self) -> tuple[str, ...]:
        """The stages whose output this one reads, in pipeline order."""
        used = {stage for stage, _ in self.reads.values()}
        return tuple(s for s in STAGE_ORDER if s in used)


_STORE = ("collect", "")
_V = ("train-vision", "final.ckpt")
_Z = ("encode", "")
_M = ("train-memory", "final.ckpt")

PIPELINE: tuple[Stage, ...] = (
    Stage("collect", "Collect episodes of a real env into a rollout store.", None),
    Stage("train-vision", "Train a vision model V (VAE, JEPA or random) on a rollout store.",
          "vision", {"data": _STORE}),
    Stage("encode", "Encode every stored frame with a trained V into a latent set.",
          "latents", {"vision": _V, "data": _STORE}),
    Stage("train-memory", "Train the MDN-RNN M on a latent set.",
          "memory", {"latents": _Z, "data": _STORE}),
    Stage("fidelity", "Measure how faithful M's dream is on held-out episodes (before "
          "CMA-ES).", "fidelity", {"memory": _M, "latents": _Z, "data": _STORE}),
    Stage("train-controller", "Train the linear controller C with CMA-ES in the dream or the "
          "real env.", "controller", {"vision": _V, "memory": _M, "latents": _Z,
                                      "data": _STORE}),
    Stage("evaluate", "Evaluate C in the real env and in the dream; write results.json.",
          "eval", {"vision": _V, "memory": _M, "controller": ("train-controller", "best.npz"),
                   "latents": _Z, "data": _STORE,
                   "fidelity": ("fidelity", "fidelity.json")}),
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

    def stage_dirs(self) -> dict[str, Path]:
        """Every stage's output folder, in pipeline order."""
        return {s: self.stage_dir(s) for s in STAGE_ORDER}


def run_paths(cfg: Any, runs: str | os.PathLike) -> RunPaths:
    """The folders of the run described by the resolved ``cfg`` under ``runs``."""
    from jepa_wm.config import data_hash

    root = Path(runs) / safe_name(cfg.experiment)
    store = root / "data" / f"{safe_name(cfg.env)}-seed{cfg.seed}-{data_hash(cfg)}"
    cell = root / safe_name(cfg.variant) / f"seed{cfg.seed}"
    return RunPaths(root=root, store=store, cell=cell)


def input_folders(stage: str, flags: dict[str, Any]) -> dict[str, Path]:
    """Upstream stage -> the folder it wrote, from ``stage``'s path flags (``flags``: flag ->
    path or None; a file flag names a file inside its stage's folder)."""
    out = {}
    for flag, (up, name) in STAGE[stage].reads.items():
        if flags.get(flag):
            path = Path(flags[flag])
            out.setdefault(up, path.parent if name else path)
    return out


def stage_folder(cell: str | os.PathLike, stage: str) -> Path:
    """Where ``stage`` writes inside the cell folder ``cell`` (not for collect)."""
    return Path(cell) / STAGE[stage].folder
