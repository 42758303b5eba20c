"""The stage contract on a real finished run (the smoke VAE on VizDoom, through the CLI): a
key that changes a stage's result, changed on the finished run folder, redoes that stage and
everything downstream, never resuming or re-stamping the old work (which is moved aside, not
deleted); upstream stages are untouched; a speed-only key changes nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jepa_wm import contract, pipeline

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "experiments" / "smoke.yaml"
VAE = ROOT / "configs" / "variants" / "vae.yaml"
STAGES = contract.STAGE_ORDER


def run(runs: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "jepa_wm.cli", "run", "--config", str(SMOKE),
                           "--config", str(VAE), "--seed", "0", "--out", str(runs),
                           *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def ran(proc: subprocess.CompletedProcess) -> list[str]:
    """The stages a ``run`` did work in (in order), from its per-stage lines."""
    return [s for s in STAGES if f"run: {s:<17} done in" in proc.stdout]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("contract") / "runs"
    assert ran(run(runs)) == list(STAGES)
    return runs


@pytest.fixture
def runs(finished, tmp_path) -> Path:
    """A private copy of the finished run folder."""
    copy = tmp_path / "runs"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def cell(runs: Path) -> Path:
    return runs / "smoke" / "vae" / "seed0"


def done_hashes(runs: Path) -> dict[str, str]:
    paths = contract.run_paths(pipeline.resolve([SMOKE, VAE], 0, runs), runs)
    return {s: json.loads((paths.stage_dir(s) / "DONE.json").read_text())["config_hash"]
            for s in STAGES}


def read(path: Path):
    return json.loads(path.read_text())


# (key, value, the first stage it changes, what the new result must show); every stage
# downstream of it is redone too, except C when only the fidelity figures changed (C does
# not read them)
CHANGES = [
    ("evaluate.episodes", "3", "evaluate",
     lambda c: len(read(c / "eval" / "results.json")["real_scores"]) == 3),
    ("controller_train.generations", "4", "train-controller",
     lambda c: len(read(c / "controller" / "history.json")) == 4),
    ("evaluate.fidelity_dreams", "40", "fidelity",
     lambda c: read(c / "eval" / "results.json")["fidelity"] == read(
         c / "fidelity" / "fidelity.json")),
    ("evaluate.fidelity_hold_episodes", "2", "fidelity",
     lambda c: read(c / "fidelity" / "fidelity.json")["hold_real_episodes"] == 2),
    ("memory_train.max_steps", "30", "train-memory",
     lambda c: torch.load(c / "memory" / "last.ckpt", weights_only=True)["global_step"] == 30),
    ("iterate.rounds", "1", "iterate",
     lambda c: read(c / "eval" / "results.json")["iterate"][0]["policy"].startswith(
         "controller(") and read(c / "eval" / "results.json")["fidelity"] == read(
         c / "iterate" / "fidelity.json")),
    ("vision_train.max_steps", "5", "train-vision",
     lambda c: read(c / "vision" / "metrics.json")["steps"] == 5),
]


@pytest.mark.slow
@pytest.mark.parametrize("key,value,first,check", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_changed_key_redoes_its_stage_and_everything_downstream(runs, key, value, first,
                                                                   check):
    before = done_hashes(runs)
    old = {s: contract.run_paths(pipeline.resolve([SMOKE, VAE], 0, runs), runs).stage_dir(s)
           for s in STAGES}
    proc = run(runs, f"--{key}={value}")
    redone = [s for s in STAGES[STAGES.index(first):]
              if not (first == "fidelity" and s == "train-controller")]
    assert ran(proc) == redone, proc.stdout
    after = done_hashes(runs)
    assert [s for s in STAGES if after[s] != before[s]] == redone
    assert check(cell(runs))
    for stage in redone:  # the old result was moved aside whole, not resumed or deleted
        aside = list(old[stage].parent.glob(f"{old[stage].name}.replaced-*"))
        assert len(aside) == 1, (stage, proc.stdout)
        assert read(aside[0] / "DONE.json")["config_hash"] == before[stage]
        assert f"{stage}: {old[stage]} held work of another config" in proc.stdout
    # and the changed config is now the finished one: a second run does nothing
    assert ran(run(runs, f"--{key}={value}")) == []


@pytest.mark.slow
def test_a_changed_data_key_collects_a_new_store_and_redoes_every_stage(runs):
    """collect's result is shared by every variant of a seed, so a data key (here the data
    policy's longest hold) never touches the old store: it collects a new one beside it,
    and every stage of the cell is redone on it, the old work moved aside."""
    cfg_old = pipeline.resolve([SMOKE, VAE], 0, runs)
    cfg_new = pipeline.resolve([SMOKE, VAE], 0, runs, overrides={"max_hold": 3})
    old, new = contract.run_paths(cfg_old, runs), contract.run_paths(cfg_new, runs)
    assert new.store != old.store and not new.store.exists()
    before = done_hashes(runs)
    old_meta = (old.rollouts / "meta.json").read_bytes()
    proc = run(runs, "--max_hold=3")
    assert ran(proc) == list(STAGES), proc.stdout
    assert (old.rollouts / "meta.json").read_bytes() == old_meta  # the old store untouched
    assert read(old.rollouts / "DONE.json")["config_hash"] == before["collect"]
    assert "max_hold=3" in read(new.rollouts / "meta.json")["policy"]
    for stage in STAGES[1:]:  # every stage of the cell: redone, the old work moved aside
        folder = old.stage_dir(stage)
        aside = list(folder.parent.glob(f"{folder.name}.replaced-*"))
        assert len(aside) == 1, (stage, proc.stdout)
        assert read(aside[0] / "DONE.json")["config_hash"] == before[stage]
    assert read(new.stage_dir("evaluate") / "results.json")["real_scores"]
    assert ran(run(runs, "--max_hold=3")) == []


def test_iterate_off_passes_m_c_and_fidelity_through_byte_for_byte(finished):
    c = cell(finished)
    for upstream, passed in (("memory/final.ckpt", "iterate/final.ckpt"),
                             ("controller/best.npz", "iterate/best.npz"),
                             ("fidelity/fidelity.json", "iterate/fidelity.json")):
        assert (c / upstream).read_bytes() == (c / passed).read_bytes(), passed
    assert read(c / "iterate" / "rounds.json") == []
    assert "iterate" not in read(c / "eval" / "results.json")


@pytest.mark.slow
def test_speed_only_keys_change_nothing(runs):
    before = done_hashes(runs)
    proc = run(runs, "--memory_train.threads=1", "--vision_train.num_workers=1",
               "--vision_train.threads=1", "--controller_train.workers=2",
               "--evaluate.workers=1")
    assert ran(proc) == [] and done_hashes(runs) == before
    assert not list(cell(runs).rglob("*.replaced-*"))


def test_a_stage_revision_changes_its_identity(monkeypatch, tmp_path):
    """A code change that alters a stage's result raises its revision: folders of the old
    code then hold another identity and are redone (downstream stages chain it as their
    upstream); revision 1 adds nothing to the hash."""
    from jepa_wm.config import semantic_section
    from jepa_wm.io import hash_obj

    cfg = pipeline.resolve([SMOKE, VAE], 0, tmp_path)
    paths = contract.run_paths(cfg, tmp_path)
    stage_cfg, _ = pipeline.stage_config("train-memory", cfg, paths)
    before = contract.identity("train-memory", cfg, upstream="v")
    run_before = pipeline.fingerprint("train-memory", stage_cfg, paths)
    assert contract.STAGE["train-memory"].revision > 1
    first = dataclasses.replace(contract.STAGE["train-memory"], revision=1)
    monkeypatch.setitem(contract.STAGE, "train-memory", first)
    assert contract.identity("train-memory", cfg, upstream="v") != before
    # and `run` does not skip it as done on the old record (its own fingerprint)
    assert pipeline.fingerprint("train-memory", stage_cfg, paths) != run_before
    assert contract.identity("train-memory", cfg, upstream="v") == hash_obj(
        {"stage": "train-memory", "upstream": "v",
         **{k: semantic_section(cfg[k]) for k in first.keys}})


@pytest.mark.parametrize("variant, revised", [("jepa_ema_task", True), ("jepa_ema", False)])
def test_a_revision_for_some_configs_reaches_identity_and_fingerprint(monkeypatch, tmp_path,
                                                                      variant, revised):
    """The task-window fix (a JEPA's task heads never saw a death) revises train-vision for
    V's with task heads only: their identity and `run`'s fingerprint change, so a V made by
    the old code is redone, never skipped as done; any other V keeps both."""
    cfg = pipeline.resolve([SMOKE, ROOT / "configs" / "variants" / f"{variant}.yaml"], 0,
                           tmp_path)
    paths = contract.run_paths(cfg, tmp_path)
    stage_cfg, _ = pipeline.stage_config("train-vision", cfg, paths)
    now = (contract.identity("train-vision", cfg, upstream="s"),
           pipeline.fingerprint("train-vision", stage_cfg, paths))
    monkeypatch.setattr(contract, "_task_windows", lambda stage, values: {})  # the old code
    old = (contract.identity("train-vision", cfg, upstream="s"),
           pipeline.fingerprint("train-vision", stage_cfg, paths))
    assert (now[0] != old[0], now[1] != old[1]) == (revised, revised)
