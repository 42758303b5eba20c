"""The report's statistics on synthetic results.json files, against hand-computed values,
and the offline W&B summary run's group and job_type."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

import pytest

from jepa_wm import report
from jepa_wm.io import UserError, write_json, write_yaml

# variant -> seed -> (real_scores, dream_mean); real_mean is the mean of the scores
SYNTHETIC = {
    "vae": {0: ([90, 110], 400), 1: ([180, 220], 500), 2: ([250, 350], 600)},
    "jepa_ema": {0: ([150, 150], 150), 1: ([300, 300], 300)},
    "random": {0: ([50, 50], 80)},
}


def make_experiment(root: Path) -> Path:
    """runs/<exp> with the SYNTHETIC results, a failed seed and an unfinished one."""
    exp = root / "synthetic"
    for variant, seeds in SYNTHETIC.items():
        for seed, (scores, dream) in seeds.items():
            cell = exp / variant / f"seed{seed}"
            real_mean = sum(scores) / len(scores)
            write_json(cell / "eval" / "results.json", {
                "real_mean": real_mean, "real_std": 0.0, "real_scores": scores,
                "dream_mean": dream, "dream_real_gap": dream - real_mean, "seed": seed,
                "variant": variant, "tau": 1.15,
                "tau_table": [{"tau": 1.0, "dream_mean": dream + 10},
                              {"tau": 1.15, "dream_mean": dream}]})
            write_json(cell / "vision" / "metrics.json",
                       {"final_loss": 0.5 + seed, "vision": {"effective_rank": 10 + seed},
                        "budget": {"kind": "flops", "limit": 3e15, "steps": 100 * (seed + 1),
                                   "flops": 1e13 * (seed + 1), "seconds": 60.0}})
            write_json(cell / "memory" / "metrics.json", {"final_loss": 1.0 + seed})
            write_json(cell / "memory" / "validation.json", [
                {"step": 10 * k, "seconds": k, "val/gmm_nll": 1.5 - 0.1 * k} for k in (1, 2)])
            write_json(cell / "probe" / "probes.json", {"scores": {
                "probe_player_y": 0.1 * (seed + 1), "probe_fireball_in_view": 0.8,
                "probe_fireball_in_view_base": 0.7}})
            write_json(cell / "pipeline.json", {"stages": {
                s: {"wall_time": 10.0 * (seed + 1)} for s in report.STAGES}})
            write_json(cell / "controller" / "history.json", [
                {"generation": g, "fitness_mean": 100 + g, "real_mean": 90 + g}
                for g in range(3)])
            write_yaml(cell / "config.yaml", {
                "experiment": "synthetic", "env": "VizdoomTakeCover-v1", "episodes": 6,
                "vision_train": {"max_steps": 4}, "memory_train": {"max_epochs": 2,
                                                                   "max_steps": -1},
                "controller_train": {"generations": 3, "popsize": 8, "rollouts": 2,
                                     "where": "dream", "tau": 1.15},
                "evaluate": {"episodes": 2, "dream_episodes": 16},
                "wandb": {"mode": "disabled"}})
    write_json(exp / "jepa_ema" / "seed2" / "FAILED.json", {"error": "RuntimeError: boom"})
    (exp / "random" / "seed1").mkdir(parents=True)  # started, never finished
    return exp


@pytest.fixture
def experiment(tmp_path):
    return make_experiment(tmp_path)


def rows_by_variant(exp: Path) -> dict[str, dict[str, str]]:
    with open(exp / "report" / "results.csv") as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


def test_statistics_match_hand_computed_values(experiment):
    report.write_report(experiment, baseline="vae", gifs=False, quiet=True)
    rows = rows_by_variant(experiment)
    assert list(rows) == ["vae", "jepa_ema", "random"]  # baseline first
    vae, jepa, rnd = rows["vae"], rows["jepa_ema"], rows["random"]

    # vae: seed means 100, 200, 300
    assert int(vae["n_seeds"]) == 3
    assert float(vae["real_mean"]) == pytest.approx(200)
    assert float(vae["real_std"]) == pytest.approx(100)  # sample std over seeds
    # bootstrap of 3 values: P(resample mean = 100) = 1/27 > 2.5%, so the 95% percentile
    # interval is exactly [min, max]
    assert float(vae["ci_low"]) == pytest.approx(100)
    assert float(vae["ci_high"]) == pytest.approx(300)
    # IQM of the 6 episodes 90 110 180 220 250 350: drop one each end -> mean(110..250)
    assert float(vae["iqm"]) == pytest.approx((110 + 180 + 220 + 250) / 4)
    assert float(vae["dream_mean"]) == pytest.approx(500)
    assert float(vae["dream_real_gap"]) == pytest.approx(300)
    assert float(vae["p_improvement"]) == pytest.approx(0.5)
    assert float(vae["v_loss"]) == pytest.approx(1.5)  # mean of 0.5, 1.5, 2.5
    assert float(vae["m_loss"]) == pytest.approx(2.0)
    assert float(vae["effective_rank"]) == pytest.approx(11)
    assert vae["v_budget"] == "3e+15 FLOPs" and float(vae["v_steps"]) == pytest.approx(200)
    assert float(vae["v_tflops"]) == pytest.approx(20)
    assert float(vae["wall_train_vision_s"]) == pytest.approx(20)
    assert float(vae["probe_player_y"]) == pytest.approx(0.2)  # mean of 0.1, 0.2, 0.3
    assert float(vae["probe_fireball_in_view_base"]) == pytest.approx(0.7)

    # jepa_ema: seed means 150, 300 vs vae 100, 200, 300:
    # pairs won 150>100, 300>100, 300>200, tie 300=300 -> (3 + 0.5) / 6
    assert float(jepa["p_improvement"]) == pytest.approx(3.5 / 6)
    assert float(jepa["real_std"]) == pytest.approx(math.sqrt(2 * 75**2))
    assert (float(jepa["ci_low"]), float(jepa["ci_high"])) == pytest.approx((150, 300))
    assert float(jepa["iqm"]) == pytest.approx(225)  # 150 150 300 300 -> mean(150, 300)
    assert jepa["failed_seeds"] == "2"

    # one seed: the CI is the point itself, the std is undefined
    assert int(rnd["n_seeds"]) == 1
    assert (float(rnd["ci_low"]), float(rnd["ci_high"])) == (50.0, 50.0)
    assert rnd["real_std"] == ""
    assert float(rnd["p_improvement"]) == pytest.approx(0.0)  # 50 loses to every vae seed
    assert rnd["incomplete_seeds"] == "1"


def test_markdown_plots_and_tau_table(experiment, capsys):
    report.write_report(experiment, baseline="vae", gifs=False)
    out = experiment / "report"
    md = (out / "results.md").read_text()
    assert "6 episodes collected" in md and "3 generations x 8 candidates x 2 rollouts" in md
    assert "| vae | 3 | 200.0 | 100.0 | [100.0, 300.0] |" in md
    assert "With one seed the CI is the point itself" in md
    assert "## Dream temperature" in md
    assert "## Probes" in md and "| vae | 0.800 | 0.700 | 0.200 |" in md
    for name in ("scores.png", "cmaes.png", "tau.png", "learning.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    with open(out / "tau.csv") as f:
        taus = list(csv.DictReader(f))
    vae_tau1 = next(t for t in taus if t["variant"] == "vae" and float(t["tau"]) == 1.0)
    assert float(vae_tau1["dream_mean"]) == pytest.approx(510)
    printed = capsys.readouterr().out
    assert "jepa_ema" in printed and "[150.0, 300.0]" in printed
    # jepa_ema lost seed 2, random did not finish seed 1: the table says it is incomplete
    assert "**Incomplete comparison**" in md and "Incomplete comparison" in printed
    assert "`vae` seeds 0 1 2" in md and "`jepa_ema` seeds 0 1" in md


def test_completeness_note_only_when_the_seed_sets_differ():
    rows = [{"variant": "vae", "seeds": "0 1", "failed_seeds": "", "incomplete_seeds": ""},
            {"variant": "jepa_ema", "seeds": "0 1", "failed_seeds": "", "incomplete_seeds": ""}]
    assert report.completeness_note(rows) is None
    rows[1]["seeds"] = "0"
    assert "`vae` seeds 0 1; `jepa_ema` seeds 0)" in report.completeness_note(rows)


def test_history_curves_reads_generations_and_real_checks():
    history = {"generations": [{"generation": 0, "fitness_mean": 5.0},
                               {"generation": 1, "fitness_mean": 6.0, "real_mean": 4.0}]}
    assert report.history_curves(history) == ([0, 1], [5.0, 6.0], [1], [4.0])


def test_missing_baseline_and_empty_folder(tmp_path, experiment):
    rows = report.write_report(experiment, baseline="nope", gifs=False, quiet=True)
    assert all(math.isnan(r["p_improvement"]) for r in rows)
    assert "Baseline `nope` has no finished run" in (experiment / "report" /
                                                     "results.md").read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no <variant>/seed<k> run folders"):
        report.find_runs(tmp_path / "empty")


def _wandb_run_records(run_file: Path):
    """The records of an offline ``.wandb`` file (LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf = run_file.read_bytes(), 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_offline_wandb_summary_run_has_group_and_job_type(experiment):
    """Through the real CLI in its own process: the run file is complete once it exits (read
    in the test's process, wandb's writer could still be flushing it under load)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-m", "jepa_wm.cli", "report", str(experiment),
                    "--gifs", "false"], env=env, check=True, capture_output=True, timeout=300)
    run_dirs = list((experiment / "report" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    runs = [r.run for r in _wandb_run_records(next(run_dirs[0].glob("run-*.wandb")))
            if r.WhichOneof("record_type") == "run"]
    assert runs, "no run record in the offline run file"
    assert runs[0].run_group == "report"
    assert runs[0].job_type == "report"
    assert set(runs[0].tags) == {"synthetic"}


def test_a_sweep_over_episodes_gets_the_data_scaling_table_and_plot(tmp_path):
    """Variants named by a sweep's ``overrides: {episodes: [...]}`` (``vae--episodes=N``):
    the report adds real return against the frames each store holds, with CIs, and a
    log-axis plot; a base variant with one budget is left out of it."""
    exp = tmp_path / "scaling"
    scores = {("vae", 200): [300, 340], ("vae", 1000): [500, 700],
              ("jepa_ema", 200): [250, 270], ("random", 200): [200, 210]}
    for (variant, episodes), means in scores.items():
        name = f"{variant}--episodes={episodes}"
        store = tmp_path / "data" / name
        write_json(store / "rollouts" / "meta.json", {"frames": 330 * episodes})
        for seed, mean in enumerate(means):
            cell = exp / name / f"seed{seed}"
            write_json(cell / "eval" / "results.json", {
                "real_mean": mean, "real_scores": [mean], "dream_mean": mean, "seed": seed})
            write_json(cell / "pipeline.json", {"stages": {}, "store": str(store)})
    rows = report.write_report(exp, baseline="vae--episodes=200", gifs=False, quiet=True)
    scaling = report.scaling_rows(rows, report.find_runs(exp))
    assert [(r["variant"], r["episodes"]) for r in scaling] == [("vae", 200), ("vae", 1000)]
    big = scaling[1]
    assert big["frames"] == 330_000 and big["real_mean"] == 600 and big["n_seeds"] == 2
    assert (big["ci_low"], big["ci_high"]) == (500, 700)
    md = (exp / "report" / "results.md").read_text()
    assert "## Data scaling" in md and "| vae | 1000 | 330000 | 2 | 600.0 | [500.0, 700.0] |" in md
    assert (exp / "report" / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_line_says_when_c_came_from_iterative_training(experiment):
    runs = report.find_runs(experiment)
    assert "iterative" not in report.budget_line(runs)
    for run in runs:
        if run.config:
            run.config["iterate"] = {"rounds": 2, "episodes": 300, "memory_epochs": 10}
    line = report.budget_line(runs)
    assert "then 2 round(s) of iterative training (C plays 300 real episodes" in line
