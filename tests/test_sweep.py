"""Sweeps: the sweep file, the grid, failure recording through submitit's local executor,
and (marked ``slow``) the real smoke sweep end to end on VizDoom: its report, a second
``run`` of a finished run doing no work, and a failing cell next to finished ones."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jepa_wm import contract, sweep
from jepa_wm.io import UserError

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
SMOKE = ROOT / "configs" / "experiments" / "smoke.yaml"
VAE = ROOT / "configs" / "variants" / "vae.yaml"


def jepa_wm(*args, timeout=900):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "jepa_wm.cli", *map(str, args)], cwd=ROOT,
                          check=False,
                          env=env, capture_output=True, text=True, timeout=timeout)


def write_sweep(path: Path, **spec) -> Path:
    path.write_text("# test sweep\n" + json.dumps(spec) + "\n")  # JSON is YAML
    return path


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_files_resolve_every_cell(path, tmp_path):
    spec = sweep.load_sweep(path)
    cells = sweep.make_cells(spec, tmp_path)
    grid = math.prod(len(v) for v in spec.overrides.values())  # 1 without overrides
    assert len(cells) == len(spec.variants) * len(spec.seeds) * grid
    cfgs = [c.resolve() for c in cells]
    assert len({c.name for c in cells}) == len(cells)
    assert {cfg.sweep for cfg in cfgs} == {path.stem}
    assert spec.baseline in {c.variant for c in cells}


def test_sweep_file_with_an_unknown_key_fails_naming_it(tmp_path):
    bad = write_sweep(tmp_path / "bad.yaml", experiment=str(SMOKE), variants=[str(VAE)],
                      seeds=[0], seed=[1])
    with pytest.raises(UserError, match="seed"):
        sweep.load_sweep(bad)
    missing = write_sweep(tmp_path / "missing.yaml", experiment="nope.yaml",
                          variants=[str(VAE)])
    with pytest.raises(UserError, match="nope.yaml"):
        sweep.load_sweep(missing)


def test_override_grid_gives_one_labelled_cell_per_value(tmp_path):
    path = write_sweep(tmp_path / "tau.yaml", experiment=str(SMOKE), variants=[str(VAE)],
                       seeds=[0, 1], overrides={"controller_train.tau": [1.0, 1.15]},
                       set={"evaluate.episodes": 3})
    cells = sweep.make_cells(sweep.load_sweep(path), tmp_path)
    assert sorted(c.name for c in cells) == [
        "vae--tau=1.0/seed0", "vae--tau=1.0/seed1", "vae--tau=1.15/seed0",
        "vae--tau=1.15/seed1"]
    cfg = next(c for c in cells if c.variant == "vae--tau=1.0").resolve()
    assert cfg.controller_train.tau == 1.0 and cfg.variant == "vae--tau=1.0"
    assert cfg.evaluate.episodes == 3  # `set` applies to every cell, not in the name


def test_failing_cell_through_submitit_local_is_recorded_and_reported(tmp_path):
    """The SLURM code path (submitit, one pickled job per cell), run locally."""
    broken = tmp_path / "no_env.yaml"
    broken.write_text("# a cell that must fail\nvariant: no_env\nenv: NoSuchEnv-v0\n")
    path = write_sweep(tmp_path / "fail.yaml", experiment=str(SMOKE), variants=[str(broken)],
                       seeds=[0], baseline="no_env")
    with pytest.raises(sweep.CellsFailed, match="no_env/seed0"):
        sweep.sweep(path, tmp_path / "runs", launcher="submitit-local")
    exp = tmp_path / "runs" / "smoke"
    failed = json.loads((exp / "no_env" / "seed0" / "FAILED.json").read_text())
    assert "NoSuchEnv-v0" in failed["error"]
    assert list((exp / "sweep_logs" / "fail").glob("*_submitted.pkl"))  # went via submitit
    row = read_csv(exp / "report" / "results.csv")["no_env"]
    assert row["n_seeds"] == "0" and row["failed_seeds"] == "0"


def test_bad_launcher_is_a_user_error():
    with pytest.raises(UserError, match="launcher"):
        sweep.launch([], launcher="kubernetes")


# -- the real pipeline ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> Path:
    """configs/sweeps/smoke.yaml run for real (collect -> evaluate on VizDoom, 2 variants x
    2 seeds) through the CLI; returns the runs folder."""
    runs = tmp_path_factory.mktemp("smoke") / "runs"
    out = jepa_wm("sweep", "configs/sweeps/smoke.yaml", "--out", runs, "--jobs", 2)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return runs


@pytest.mark.slow
def test_smoke_sweep_end_to_end_writes_the_report(smoke_runs):
    exp = smoke_runs / "smoke"
    rows = read_csv(exp / "report" / "results.csv")
    assert list(rows) == ["vae", "jepa_ema"]
    for row in rows.values():
        assert row["n_seeds"] == "2" and row["failed_seeds"] == ""
        assert float(row["ci_low"]) <= float(row["real_mean"]) <= float(row["ci_high"])
        assert row["dream_mean"] != "" and row["wall_train_vision_s"] != ""
    assert float(rows["vae"]["p_improvement"]) == 0.5
    assert len(list((exp / "data").iterdir())) == 2  # one store per seed, shared by variants
    for variant in rows:
        for seed in (0, 1):
            results = json.loads((exp / variant / f"seed{seed}" / "eval" /
                                  "results.json").read_text())
            assert results["variant"] == variant and results["seed"] == seed
            fidelity = results["fidelity"]  # the dream judged on held-out episodes
            for key in ("death_sum_per_episode", "policy_survival_dream",
                        "policy_survival_real", "policy_survival_ratio", "open_loop_mse_10"):
                assert math.isfinite(fidelity[key]), key
            assert fidelity["policy_survival_ratio"] == pytest.approx(
                fidelity["policy_survival_dream"] / fidelity["policy_survival_real"])
        assert float(rows[variant]["fidelity_policy_survival_ratio"]) > 0
        for key in ("fidelity_hazard_early", "fidelity_hazard_last2"):  # death-head sharpness
            assert 0 < float(rows[variant][key]) < 1, key
    md = (exp / "report" / "results.md").read_text()
    assert "## Dream fidelity" in md and "policy survival: dream" in md
    assert "| vae | 2 |" in md and "Budget per run" in md
    assert (exp / "report" / "scores.png").exists()
    assert "learning.png" in md  # V's and M's curves from their validation.json
    assert (exp / "report" / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for variant in rows:
        for seed in (0, 1):
            for part, key in (("vision", "vision/effective_rank"), ("memory", "val/gmm_nll")):
                curve = json.loads((exp / variant / f"seed{seed}" / part /
                                    "validation.json").read_text())
                assert curve and all(math.isfinite(e[key]) for e in curve), (part, key)
    for variant in rows:  # one dream beside its real episode per variant
        assert (exp / "report" / f"dream-{variant}.gif").stat().st_size > 0


@pytest.mark.slow
def test_second_run_of_a_finished_run_does_no_work(smoke_runs):
    cell = smoke_runs / "smoke" / "vae" / "seed0"
    markers = sorted(cell.rglob("DONE.json")) + sorted(
        (smoke_runs / "smoke" / "data").rglob("DONE.json"))
    before = {p: p.stat().st_mtime_ns for p in markers}
    out = jepa_wm("run", "--config", SMOKE, "--config", VAE, "--seed", 0, "--out", smoke_runs)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("skipped (done)") == len(contract.STAGE_ORDER)
    assert "ran nothing" in out.stdout
    assert {p: p.stat().st_mtime_ns for p in markers} == before
    again = jepa_wm("sweep", "configs/sweeps/smoke.yaml", "--out", smoke_runs)
    assert again.returncode == 0, again.stderr
    assert "4 done, 0 to run" in again.stdout


@pytest.mark.slow
def test_a_finished_sweep_whose_stores_were_deleted_stays_finished(smoke_runs, tmp_path):
    """Deleting the rollout stores of a finished sweep (to free disk) leaves its cells
    finished: a second sweep and a run do no work and make no store again. A cell that must
    run a stage again (here C, with another search) gets its store back first."""
    import shutil

    from jepa_wm import pipeline
    from jepa_wm.report.runs import find_runs
    from jepa_wm.report.stats import store_frames

    runs = tmp_path / "runs"  # a copy (mtimes kept), so the shared smoke_runs stays whole
    shutil.copytree(smoke_runs / "smoke", runs / "smoke", symlinks=True)
    shutil.rmtree(runs / "smoke" / "data")
    markers = sorted((runs / "smoke").rglob("DONE.json"))
    before = {p: p.stat().st_mtime_ns for p in markers}
    again = jepa_wm("sweep", "configs/sweeps/smoke.yaml", "--out", runs)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "4 done, 0 to run" in again.stdout
    out = jepa_wm("run", "--config", SMOKE, "--config", VAE, "--seed", 0, "--out", runs)
    assert out.returncode == 0, out.stderr
    assert "ran nothing" in out.stdout and out.stdout.count("output was deleted") == 1
    assert not (runs / "smoke" / "data").exists()
    assert {p: p.stat().st_mtime_ns for p in markers} == before
    cell = runs / "smoke" / "vae" / "seed0"  # its report still knows the store's size
    assert json.loads((cell / "pipeline.json").read_text())["store"].startswith(str(runs))
    frames = {(r.variant, r.seed): store_frames(r) for r in find_runs(smoke_runs / "smoke")}
    assert all(f > 0 for f in frames.values())
    assert {(r.variant, r.seed): store_frames(r) for r in find_runs(runs / "smoke")} == frames
    cfg = pipeline.resolve([SMOKE, VAE], 0, runs, {"controller_train.generations": 4})
    paths = contract.run_paths(cfg, runs)
    status = pipeline.plan(cfg, paths, pipeline.read_record(paths))
    assert status["collect"] == status["train-controller"] == status["evaluate"] == "todo"
    same = pipeline.resolve([SMOKE, VAE], 0, runs)
    assert set(pipeline.plan(same, paths, pipeline.read_record(paths)).values()) == \
        {"done", "pruned"}


@pytest.mark.slow
def test_transfer_benchmark_reports_a_finished_sweep_without_rerunning_it(smoke_runs,
                                                                           tmp_path):
    markers = sorted((smoke_runs / "smoke").rglob("DONE.json"))
    before = {p: p.stat().st_mtime_ns for p in markers}
    out_md = tmp_path / "results" / "transfer_quick.md"
    out = subprocess.run([sys.executable, "benchmarks/transfer.py", "--quick", "--runs",
                          str(smoke_runs), "--jobs", "1", "--out", str(out_md)], cwd=ROOT,
                         env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in markers} == before  # resumed: nothing re-ran
    text = out_md.read_text()
    rows = read_csv(smoke_runs / "smoke" / "report" / "results.csv")
    assert "cells: 4 finished of 4 folders; their pipelines add up to" in text and "| 1092 +- 556 |" in text
    import yaml

    episodes = yaml.safe_load(SMOKE.read_text())["episodes"]
    assert f"| random episodes collected | 10,000 | {episodes:,} |" in text
    best = max(rows.values(), key=lambda r: float(r["real_mean"]))
    score = float(best["real_mean"])
    verdict = "met" if score >= 750 else f"missed by {750 - score:.1f}"
    assert f"| {best['variant']}: {score:.1f} " in text and verdict in text
    for variant, row in rows.items():
        assert f"| {variant} (2 seeds, this budget) | {float(row['real_mean']):.1f} " in text
    # the baselines, replayed here on the same evaluation seeds: the same means
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from baselines import play

    from jepa_wm.controller.evaluate import eval_seeds

    cfg = yaml.safe_load((smoke_runs / "smoke" / "vae" / "seed0" / "config.yaml").read_text())
    hold = cfg["max_hold"]
    for max_hold, name in [(1, "uniform random play"),
                           (hold, f"the data policy, a random action held 1..{hold} steps")]:
        mean = sum(play(max_hold, eval_seeds(s, cfg["evaluate"]["episodes"])).mean()
                   for s in (0, 1)) / 2
        assert f"| {name} (2 seeds, the variants' evaluation episodes) | {mean:.1f} [" in text
    assert (tmp_path / "results" / "transfer_quick_scores.png").stat().st_size > 0


@pytest.mark.slow
def test_a_failing_cell_leaves_the_rest_finished_and_shows_in_the_report(smoke_runs,
                                                                          tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("# V training that cannot run\nvariant: broken\n"
                      "vision_train:\n  batch_size: 0\n")
    path = write_sweep(tmp_path / "mixed.yaml", experiment=str(SMOKE),
                       variants=[str(VAE), str(broken)], seeds=[0], baseline="vae")
    out = jepa_wm("sweep", path, "--out", smoke_runs)
    assert out.returncode == 1
    assert "1 of 2 cells failed: broken/seed0" in out.stderr
    exp = smoke_runs / "smoke"
    assert (exp / "broken" / "seed0" / "FAILED.json").exists()
    assert (exp / "broken" / "seed0" / "pipeline.json").exists()  # got past collect
    rows = read_csv(exp / "report" / "results.csv")
    assert rows["broken"]["failed_seeds"] == "0" and rows["broken"]["n_seeds"] == "0"
    assert rows["vae"]["n_seeds"] == "2" and rows["jepa_ema"]["n_seeds"] == "2"
    assert "broken" in (exp / "report" / "results.md").read_text()


def test_the_verdict_sweep_runs_the_ladders_verdict_stage_for_stage():
    """``configs/sweeps/verdict.yaml``: each cell has, stage for stage, the identity of the
    ladder rung whose runs the README's verdict reports (``m512_shared_h30_it1`` with the
    same V and seed), so the sweep and the ladder make the same results."""
    from jepa_wm import pipeline

    verdict = sweep.make_cells(sweep.load_sweep(ROOT / "configs/sweeps/verdict.yaml"), "runs")
    assert {(c.variant, c.seed) for c in verdict} == {
        (v, s) for v in ("vae", "jepa_ema", "jepa_ema_flops") for s in range(5)}
    for cell in (c for c in verdict if c.seed in (0, 4)):
        rung = pipeline.resolve([ROOT / "configs/experiments/doom_fast.yaml",
                                 ROOT / f"configs/variants/{cell.variant}.yaml",
                                 ROOT / "configs/ladder/m512_shared_h30_it1.yaml"],
                                cell.seed, "runs")
        made = cell.resolve()
        for stage in contract.STAGE_ORDER:
            assert contract.identity(stage, made) == contract.identity(stage, rung), \
                (cell.name, stage)
