"""``run``: every stage of one variant and seed, in order, skipping what is already done.

The run folder layout and the stage table are ``jepa_wm.contract``'s.

Each stage skips itself when its ``DONE.json`` matches its config hash and resumes when
partial. On top of that the pipeline records a fingerprint per stage (its resolved config
plus the ``DONE.json`` stamps of its inputs), so a finished stage is not even started
again, and a stage whose input was redone is always called again.

A finished stage whose output was deleted afterwards (a rollout store removed to free disk)
is *pruned*: it counts as done, with the stamp its completion recorded, as long as no stage
that has to run reads it; when one does, it is made again (and everything after it).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from jepa_wm.config import SPEED_ONLY, data_hash, drop_neutral, to_dict
from jepa_wm.contract import STAGE, STAGE_ORDER, RunPaths, revision_entry, run_paths
from jepa_wm.io import DONE_FILE, UserError, hash_obj, write_json, write_yaml

# Keys that change how a stage reports, never what it computes.
NON_SEMANTIC_KEYS = ("config", "debug", "wandb", "sweep", "out", "print_config")
PIPELINE_FILE = "pipeline.json"
FAILED_FILE = "FAILED.json"


@functools.lru_cache(maxsize=1)
def _schema_keys() -> frozenset[str]:
    from jepa_wm.config import experiment_parser

    keys = {a.dest.split(".")[0] for a in experiment_parser()._actions}
    return frozenset(keys - {"config", "print_config", "help"})


def schema_values(cfg: Namespace) -> dict[str, Any]:
    """The experiment-schema part of a resolved config (no stage flags, no ``config``)."""
    return {k: v for k, v in to_dict(cfg).items() if k in _schema_keys()}


def stage_config(stage: str, cfg: Namespace, paths: RunPaths):
    """``(stage cfg, stage module)``: the resolved experiment plus the stage's path flags,
    parsed by the stage's own parser (so its defaults and checks apply as on the CLI)."""
    from jepa_wm.stages import build_parser

    parser, module = build_parser(stage)
    accepted = {a.dest for a in parser._actions}
    flags = {k: str(v) for k, v in paths.inputs(stage).items() if k in accepted}
    flags["out"] = str(paths.stage_dir(stage))
    return parser.parse_object({**schema_values(cfg), **flags}), module


def done_stamp(stage_dir: Path) -> list | None:
    """What identifies one completion of a stage: its DONE.json text and mtime."""
    marker = stage_dir / DONE_FILE
    try:
        return [marker.read_text(), marker.stat().st_mtime_ns]
    except FileNotFoundError:
        return None


def _semantic(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in NON_SEMANTIC_KEYS}


def _computes(values: dict[str, Any]) -> dict[str, Any]:
    """What a saved config computes: no flags, no speed-only keys, no option at its
    ``NEUTRAL`` value."""
    def fast_free(v):
        if isinstance(v, dict):
            return {k: fast_free(x) for k, x in v.items() if k not in SPEED_ONLY}
        return v
    return drop_neutral(fast_free(_semantic(values)))


def fingerprint(stage: str, stage_cfg: Namespace, paths: RunPaths,
                record: dict | None = None) -> str:
    """Hash of a stage's resolved config, its code revision and the completions of its
    inputs (an input whose output was deleted: the stamp ``record`` kept of it)."""
    # Path flags are left out: they follow from the run's identity, and the inputs' stamps
    # below say whether what is behind them changed.
    semantic = _semantic(schema_values(stage_cfg))
    inputs = {up: done_stamp(paths.stage_dir(up)) or (record or {}).get(up, {}).get("stamp")
              for up in STAGE[stage].upstream}
    return hash_obj({"stage": stage, "cfg": semantic, "inputs": inputs,
                     **revision_entry(stage, semantic)}, n=16)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing); blocks until free.

    Two sweep workers that need the same rollout store take turns: the second finds it
    complete and skips collection instead of writing into it at the same time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_record(paths: RunPaths) -> dict:
    """The cell's ``pipeline.json`` (stage -> fingerprint, wall time), or ``{}``."""
    try:
        return json.loads((paths.cell / PIPELINE_FILE).read_text()).get("stages", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def plan(cfg: Namespace, paths: RunPaths, record: dict,
         stages: Sequence[str] = STAGE_ORDER) -> dict[str, str]:
    """Each of ``stages`` as ``done`` (finished for this config and inputs), ``pruned``
    (finished, its output deleted since, and no stage that runs reads it) or ``todo``.
    A stage after one that runs is ``todo`` too (its input will change), and so is a
    pruned stage that one of them reads."""
    status: dict[str, str] = {}
    for stage in stages:
        stage_cfg, _ = stage_config(stage, cfg, paths)
        done = record.get(stage, {})
        if done.get("fingerprint") != fingerprint(stage, stage_cfg, paths, record) or \
                any(status.get(up) == "todo" for up in STAGE[stage].upstream):
            status[stage] = "todo"
        elif (paths.stage_dir(stage) / DONE_FILE).exists():
            status[stage] = "done"
        else:
            status[stage] = "pruned" if done.get("stamp") else "todo"
    changed = True
    while changed:
        changed = False
        for stage in stages:
            readers = [s for s in stages if stage in STAGE[s].upstream]
            if status[stage] != "todo" and (
                    any(status.get(up) == "todo" for up in STAGE[stage].upstream) or
                    (status[stage] == "pruned" and any(status[s] == "todo" for s in readers))):
                status[stage], changed = "todo", True
    return status


def is_complete(cfg: Namespace, runs: str | os.PathLike) -> bool:
    """True when every stage of this run is done (or pruned) for the resolved ``cfg`` (a
    sweep skips such cells without starting them)."""
    paths = run_paths(cfg, runs)
    record = read_record(paths)
    return bool(record) and "todo" not in plan(cfg, paths, record).values()


def save_config(cfg: Namespace, paths: RunPaths) -> None:
    """Write the resolved config to ``config.yaml``; a different earlier one is kept as
    ``config.previous.yaml`` (nothing written is silently lost). One that differs only by
    options at their ``NEUTRAL`` values (a key newer code added, at the value that changes
    nothing) or by ``SPEED_ONLY`` keys (threads, workers) computes the same: it is rewritten
    in the new form, nothing kept aside."""
    target = paths.cell / "config.yaml"
    values = json.loads(json.dumps(schema_values(cfg), default=str))
    if target.exists():
        old = yaml.safe_load(target.read_text()) or {}
        if _semantic(old) == _semantic(values):  # e.g. only the sweep tag differs
            return
        if _computes(old) != _computes(values):
            os.replace(target, paths.cell / "config.previous.yaml")
            print(f"run: config of {paths.cell} changed; the old one is config.previous.yaml")
    write_yaml(target, values)


def _run_stage(stage: str, cfg: Namespace, paths: RunPaths, record: dict,
               pruned: bool = False) -> str:
    """Run one stage unless current (``pruned``: also when its output is gone); update
    ``record``; return ``ran`` or ``skipped``."""
    stage_cfg, module = stage_config(stage, cfg, paths)
    fp = fingerprint(stage, stage_cfg, paths, record)
    out = paths.stage_dir(stage)
    if record.get(stage, {}).get("fingerprint") == fp:
        stamp = done_stamp(out)
        if stamp is not None:
            record[stage]["stamp"] = stamp  # this completion's (older records had none)
            print(f"run: {stage:<17} skipped (done)  {out}")
            return "skipped"
        if pruned:
            print(f"run: {stage:<17} skipped (done; its output was deleted, and no stage "
                  f"that runs reads it)  {out}")
            return "skipped"
    before = done_stamp(out)
    start = time.perf_counter()
    lock = file_lock(paths.store / ".lock") if stage == "collect" else contextlib.nullcontext()
    with lock:
        module.main(stage_cfg)
    seconds = time.perf_counter() - start
    after = done_stamp(out)
    if after is None:
        raise RuntimeError(f"{stage} returned without writing {out / DONE_FILE}")
    ran = after != before
    if ran:
        wall = seconds
    else:  # the stage found itself done (e.g. a store collected by another variant)
        wall = record.get(stage, {}).get("wall_time") or json.loads(after[0]).get("wall_time")
    record[stage] = {"fingerprint": fp, "wall_time": wall, "out": str(out), "stamp": after}
    what = f"done in {seconds:.1f}s" if ran else "skipped (done)"
    print(f"run: {stage:<17} {what}  {out}")
    return "ran" if ran else "skipped"


def run(cfg: Namespace, runs: str | os.PathLike, until: str | None = None) -> dict[str, str]:
    """Run every stage of the resolved ``cfg`` under ``runs`` (up to and including
    ``until``, e.g. ``fidelity`` to judge a dream before CMA-ES is spent on it); return
    stage -> ran|skipped.

    Stages are called in process through their ``main(cfg)``, each with its own parser's
    view of the config. The cell folder is locked so two launches of one cell take turns.
    """
    if until is not None and until not in STAGE_ORDER:
        raise UserError(f"run --until {until!r}: not a stage; accepted: "
                        f"{', '.join(STAGE_ORDER)}")
    stages = STAGE_ORDER[:STAGE_ORDER.index(until) + 1] if until else STAGE_ORDER
    paths = run_paths(cfg, runs)
    paths.cell.mkdir(parents=True, exist_ok=True)
    with file_lock(paths.cell / ".lock"):
        save_config(cfg, paths)
        record = read_record(paths)
        pruned = {s for s, v in plan(cfg, paths, record, stages).items() if v == "pruned"}
        status = {}
        for stage in stages:
            status[stage] = _run_stage(stage, cfg, paths, record, stage in pruned)
            write_json(paths.cell / PIPELINE_FILE, {
                "stages": record, "experiment": cfg.experiment, "variant": cfg.variant,
                "seed": cfg.seed, "data_hash": data_hash(cfg), "store": str(paths.store)})
        failed = paths.cell / FAILED_FILE
        if failed.exists() and until is None:  # an earlier failure of this cell is now fixed
            failed.unlink()
    ran = [s for s, v in status.items() if v == "ran"]
    print(f"run: {cfg.variant} seed {cfg.seed}: ran {', '.join(ran) or 'nothing'}; "
          f"skipped {len(status) - len(ran)} of {len(status)} stages")
    return status


def variant_name(path: str | os.PathLike) -> str:
    """A variant file's ``variant:`` value, or the file's stem when it has none."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: variant file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a variant file must be a YAML mapping of config keys")
    return str(data.get("variant") or path.stem)


def resolve(configs: Sequence[str | os.PathLike], seed: int, out: str | os.PathLike,
            overrides: dict[str, Any] | None = None, variant: str | None = None,
            sweep: str | None = None) -> Namespace:
    """Parse config files (left to right), then ``overrides`` (dotted keys), exactly as
    ``jepa-wm run --config ... --key=value`` would; an unknown key fails naming it."""
    import argparse

    from jepa_wm.stages import build_parser

    args = [a for path in configs for a in ("--config", str(path))]
    # strings as they are (JSON quotes would end up in a str key's value), the rest as JSON
    args += [f"--{k}={v if isinstance(v, str) else json.dumps(v)}"
             for k, v in (overrides or {}).items()]
    args += ["--seed", str(seed), "--out", str(out)]
    if variant is not None:
        args += ["--variant", variant]
    if sweep is not None:
        args += ["--sweep", sweep]
    parser, _ = build_parser("run")
    try:
        return parser.parse_args(args)
    except argparse.ArgumentError as e:
        files = ", ".join(str(p) for p in configs)
        raise UserError(f"config ({files}): {' '.join(str(e).split())}") from None
