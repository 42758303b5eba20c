"""``sweep``: a grid of variants x seeds (x optional overrides) on one experiment, then its
report. Every launcher (local processes, SLURM through submitit) calls the same
``run_cell``; a failing cell writes ``FAILED.json`` and does not stop the others.

A sweep file::

    # what the sweep tests
    experiment: configs/experiments/doom_fast.yaml
    variants: [configs/variants/vae.yaml, configs/variants/jepa_ema.yaml]
    seeds: [0, 1]
    overrides: {}          # optional grid, e.g. {"controller_train.tau": [1.0, 1.15]}
    set: {}                # optional values for every cell, e.g. {"evaluate.episodes": 20}
    baseline: vae          # p_improvement is over this variant (default: the first one)
    slurm: {}              # optional submitit parameters, e.g. {slurm_partition: gpu}
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from jepa_wm import pipeline
from jepa_wm.contract import run_paths, safe_name
from jepa_wm.io import UserError, write_json

LAUNCHERS = ("local", "slurm", "submitit-local")
SLURM_DEFAULTS = {"timeout_min": 240, "cpus_per_task": 2}


class CellsFailed(Exception):
    """Some cells of a sweep failed (each has its error in FAILED.json)."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid: config files, seed, overrides, and where it goes.

    Plain data only, so it pickles to a worker process or a SLURM job.
    """

    configs: tuple[str, ...]
    seed: int
    overrides: tuple[tuple[str, Any], ...]
    variant: str
    sweep: str
    runs: str
    threads: int | None = None
    folder: str = ""  # RUNS/<experiment>/<variant>/seed<k>, filled in once resolved

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    def resolve(self) -> Namespace:
        """The resolved config of this cell (what ``jepa-wm run`` would parse)."""
        return pipeline.resolve(self.configs, self.seed, self.runs, dict(self.overrides),
                                variant=self.variant, sweep=self.sweep)


def _sweep_parser() -> ArgumentParser:
    p = ArgumentParser(exit_on_error=False)
    p.add_argument("--name", type=str | None, default=None,
                   help="Sweep name (W&B tag); default: the file's stem.")
    p.add_argument("--experiment", type=str, required=True, help="Experiment config file.")
    p.add_argument("--variants", type=list[str], required=True, help="Variant config files.")
    p.add_argument("--seeds", type=list[int], default=[0], help="Seeds of every variant.")
    p.add_argument("--overrides", type=dict[str, list[Any]], default={},
                   help="Grid of dotted config keys to lists of values.")
    p.add_argument("--set", type=dict[str, Any], default={},
                   help="Dotted config keys set to one value in every cell (not in names).")
    p.add_argument("--baseline", type=str | None, default=None,
                   help="Variant name p_improvement is measured against (default: first).")
    p.add_argument("--slurm", type=dict[str, Any], default={},
                   help="submitit parameters for --launcher slurm.")
    return p


def _find(path: str, sweep_file: Path) -> str:
    """``path`` as given (from the working directory), else relative to the sweep file's
    folder or one of its parents (so ``configs/...`` works from anywhere in the repo)."""
    if Path(path).exists():
        return path
    for base in [sweep_file.parent, *sweep_file.resolve().parents]:
        if (base / path).exists():
            return str(base / path)
    raise UserError(f"{sweep_file}: config file {path!r} not found (paths are relative to "
                    "the working directory or the sweep file's folders)")


def load_sweep(path: str | os.PathLike) -> Namespace:
    """Parse and check a sweep file; an unknown key or a missing file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: sweep file not found")
    try:
        spec = _sweep_parser().parse_path(str(path))
    except argparse.ArgumentError as e:
        raise UserError(f"{path}: {' '.join(str(e).split())}") from None
    if not spec.variants or not spec.seeds:
        raise UserError(f"{path}: `variants` and `seeds` must each list at least one entry")
    for key, values in spec.overrides.items():
        if not values:
            raise UserError(f"{path}: overrides.{key} is empty; give a list of values")
    spec.name = spec.name or path.stem
    spec.experiment = _find(spec.experiment, path)
    spec.variants = [_find(v, path) for v in spec.variants]
    return spec


def _label(variant: str, combo: dict[str, Any]) -> str:
    """Folder/group name of a variant under overrides: ``vae--tau=1.15``."""
    lasts = [k.split(".")[-1] for k in combo]
    parts = [f"{k.split('.')[-1] if lasts.count(k.split('.')[-1]) == 1 else k}="
             f"{v if isinstance(v, (int, float, str)) else json.dumps(v, separators=(',', ':'))}"
             for k, v in combo.items()]
    return safe_name("--".join([variant, *parts]))


def make_cells(spec: Namespace, runs: str | os.PathLike, jobs: int = 1) -> list[Cell]:
    """Every cell of the grid, seeds outermost: a sweep stopped early still compares every
    variant on the same seeds, and cells running at once mostly share one store."""
    keys = list(spec.overrides)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(
        *(spec.overrides[k] for k in keys))]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    variant_names = {v: pipeline.variant_name(v) for v in spec.variants}
    # absolute paths: a SLURM job may start in another working directory
    runs = str(Path(runs).resolve())
    experiment = str(Path(spec.experiment).resolve())
    cells = [Cell(configs=(experiment, str(Path(variant_file).resolve())), seed=seed,
                  overrides=tuple({**spec.set, **combo}.items()),
                  variant=_label(variant_names[variant_file], combo),
                  sweep=spec.name, runs=runs, threads=threads)
             for seed in spec.seeds for variant_file in spec.variants for combo in combos]
    names = [c.name for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"sweep {spec.name}: two cells share the folder {dupes[0]}; give each "
                        "variant file a distinct `variant:` name")
    return cells


def _write_failure(cell: Cell, error: str, trace: str = "") -> None:
    folder = Path(cell.folder or run_paths(cell.resolve(), cell.runs).cell)
    write_json(folder / pipeline.FAILED_FILE, {
        "cell": cell.name, "error": error, "traceback": trace, "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell (every launcher calls this). Never raises for a failing run: the error
    goes to ``<variant>/seed<k>/FAILED.json`` and into the returned status."""
    if cell.threads:
        import torch

        torch.set_num_threads(cell.threads)
    try:
        cfg = cell.resolve()
        status = pipeline.run(cfg, cell.runs)
        return {"cell": cell.name, "ok": True, "stages": status}
    except Exception as e:  # recorded, so the other cells go on
        error = f"{type(e).__name__}: {' '.join(str(e).split())}"[:2000]
        print(f"sweep: {cell.name} failed: {error}")
        _write_failure(cell, error, traceback.format_exc())
        return {"cell": cell.name, "ok": False, "error": error}


def launch(cells: list[Cell], launcher: str = "local", jobs: int = 1,
           folder: str | os.PathLike = "sweep_logs", slurm: dict | None = None) -> list[dict]:
    """Run ``cells`` with ``launcher``; return their statuses in order.

    ``local``: in this process (``jobs`` = 1) or ``jobs`` worker processes, one fresh
    process per cell. ``slurm``: one submitit job per cell (a job array), waited for.
    ``submitit-local``: submitit's local executor, the SLURM code path on this machine.
    """
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: must be at least 1")
    if not cells:
        return []
    if launcher == "local" and jobs == 1:
        return [run_cell(c) for c in cells]
    if launcher == "local":
        ctx = get_context("spawn")  # no torch/vizdoom state inherited through fork
        with ProcessPoolExecutor(jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = [pool.submit(run_cell, c) for c in cells]
            return [_result(c, lambda f=f: f.result()) for c, f in zip(cells, futures)]
    return _launch_submitit(cells, launcher, jobs, folder, slurm or {})


def _launch_submitit(cells: list[Cell], launcher: str, jobs: int, folder, slurm: dict):
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install 'jepa_wm[slurm]'") from None
    cluster = "slurm" if launcher == "slurm" else "local"
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as e:
        raise UserError(f"--launcher {launcher}: {e}") from None
    params = {**SLURM_DEFAULTS, **slurm} if cluster == "slurm" else {"timeout_min": 240}
    if cluster == "slurm":
        params.setdefault("slurm_array_parallelism", jobs)
    params.setdefault("name", cells[0].sweep)
    try:
        executor.update_parameters(**params)
    except (TypeError, ValueError) as e:
        raise UserError(f"sweep slurm parameters: {e}") from None
    submitted = executor.map_array(run_cell, cells)
    print(f"sweep: submitted {len(submitted)} {cluster} jobs (logs in {folder})")
    return [_result(c, job.result) for c, job in zip(cells, submitted)]


def _result(cell: Cell, get) -> dict:
    """A launched cell's status; a worker that died (killed, timed out) is recorded too."""
    try:
        return get()
    except Exception as e:
        error = f"worker died: {type(e).__name__}: {' '.join(str(e).split())}"[:2000]
        _write_failure(cell, error, traceback.format_exc())
        return {"cell": cell.name, "ok": False, "error": error}


def sweep(path: str | os.PathLike, runs: str | os.PathLike = "runs", launcher: str = "local",
          jobs: int = 1, report: bool = True) -> list[dict]:
    """Run every missing cell of the sweep file at ``path`` under ``runs``, then report.

    Every cell's config is resolved first, so a bad key fails before anything runs.
    Raises ``CellsFailed`` (after the report) when any cell failed.
    """
    spec = load_sweep(path)
    cells = make_cells(spec, runs, jobs)
    cfgs = [c.resolve() for c in cells]
    cells = [replace(c, folder=str(run_paths(cfg, c.runs).cell))
             for c, cfg in zip(cells, cfgs)]
    todo = [c for c, cfg in zip(cells, cfgs) if not pipeline.is_complete(cfg, c.runs)]
    root = run_paths(cfgs[0], cells[0].runs).root
    print(f"sweep {spec.name}: {len(cells)} cells ({len(spec.variants)} variants x "
          f"{len(spec.seeds)} seeds x {len(cells) // len(spec.variants) // len(spec.seeds)} "
          f"override sets); {len(cells) - len(todo)} done, {len(todo)} to run -> {root}")
    results = launch(todo, launcher, jobs, folder=root / "sweep_logs" / spec.name,
                     slurm=spec.slurm)
    failed = [r for r in results if not r["ok"]]
    if report:
        from jepa_wm.report import write_report

        names = [c.variant for c in cells]
        baseline = spec.baseline or ("vae" if "vae" in names else names[0])
        write_report(root, baseline=baseline, sweep=spec.name)
    if failed:
        names = ", ".join(r["cell"] for r in failed)
        raise CellsFailed(f"{len(failed)} of {len(cells)} cells failed: {names} (each has "
                          f"its error in {root}/<variant>/seed<k>/FAILED.json)")
    return results
