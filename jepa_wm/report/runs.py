"""Reading an experiment folder: every ``<variant>/seed<k>/`` run and the JSON files its
stages left behind (never the stages' code)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jepa_wm.contract import STAGE_ORDER, stage_folder
from jepa_wm.io import UserError

STAGES = STAGE_ORDER  # the report's wall-time columns
SEED_DIR = re.compile(r"^seed(\d+)$")


def _read(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


@dataclass
class SeedRun:
    """Everything one variant+seed run left behind (None where a file is missing)."""

    variant: str
    seed: int
    folder: Path
    results: dict | None = None
    vision: dict | None = None
    memory: dict | None = None
    history: Any = None
    failed: dict | None = None
    pipeline: dict | None = None
    config: dict | None = None
    probes: dict | None = None
    #: the learning curves (``validation.json``) of V and M: ``{"vision": [...], "memory":
    #: [...]}``, each a list of ``{"step", "seconds", <figures>}`` (missing: absent)
    curves: dict | None = None

    @property
    def ok(self) -> bool:
        return self.results is not None and self.failed is None


def find_runs(root: str | os.PathLike) -> list[SeedRun]:
    """Every ``<variant>/seed<k>/`` folder under the experiment folder ``root``."""
    import yaml

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: experiment folder not found; give RUNS/<experiment>")
    runs = []
    for variant_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for seed_dir in sorted(variant_dir.iterdir()):
            m = SEED_DIR.match(seed_dir.name)
            if not (m and seed_dir.is_dir()):
                continue
            config = None
            if (seed_dir / "config.yaml").exists():
                config = yaml.safe_load((seed_dir / "config.yaml").read_text())
            runs.append(SeedRun(
                variant=variant_dir.name, seed=int(m.group(1)), folder=seed_dir,
                results=_read(stage_folder(seed_dir, "evaluate") / "results.json"),
                vision=_read(stage_folder(seed_dir, "train-vision") / "metrics.json"),
                memory=_read(stage_folder(seed_dir, "train-memory") / "metrics.json"),
                history=_read(stage_folder(seed_dir, "train-controller") / "history.json"),
                failed=_read(seed_dir / "FAILED.json"),
                pipeline=_read(seed_dir / "pipeline.json"), config=config,
                probes=_read(stage_folder(seed_dir, "probe") / "probes.json"),
                curves={part: curve for part, stage in (("vision", "train-vision"),
                                                        ("memory", "train-memory"))
                        if isinstance(curve := _read(stage_folder(seed_dir, stage) /
                                                     "validation.json"), list)}))
    if not runs:
        raise UserError(f"{root}: no <variant>/seed<k> run folders; run `jepa-wm run` or "
                        "`jepa-wm sweep` first")
    return runs


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def pick(metrics: dict | None, keys: Sequence[str]) -> float:
    """The first numeric value found under one of ``keys`` (nested dicts flattened with
    ``/``), else NaN."""
    flat = flatten(metrics or {})
    for key in keys:
        value = flat.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def wall_times(run: SeedRun) -> dict[str, float]:
    """Seconds per stage: the pipeline's record first, else what results.json says."""
    out = {}
    stages = (run.pipeline or {}).get("stages", {})
    from_results = (run.results or {}).get("wall_time") or {}
    for stage in STAGES:
        value = stages.get(stage, {}).get("wall_time")
        if value is None and isinstance(from_results, dict):
            value = from_results.get(stage, from_results.get(stage.replace("-", "_")))
        out[stage] = float(value) if isinstance(value, (int, float)) else math.nan
    return out
