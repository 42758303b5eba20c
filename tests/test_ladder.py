"""benchmarks/ladder.py: a rung is given an earlier rung's finished parts only where its own
config would make the same bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _ladder():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ladder

    return ladder


def _finish_round_zero(ladder, rung: Path, runs: Path):
    """Mark the store, V, latents, M and C of ``rung`` (seed 0) done, as a run leaves them."""
    from jepa_wm.contract import run_paths
    from jepa_wm.pipeline import save_config

    cfg, _ = ladder.rung_config(rung, ladder.VAE, 0, runs)
    paths = run_paths(cfg, runs)
    for folder in (paths.store / "rollouts", *(paths.cell / d for d in
                                               ("vision", "latents", "memory", "controller"))):
        folder.mkdir(parents=True)
        (folder / "DONE.json").write_text("{}")
    save_config(cfg, paths)
    return paths


def _shared(ladder, rung: Path, runs: Path) -> dict[str, bool]:
    from jepa_wm.contract import run_paths

    cfg, out = ladder.rung_config(rung, ladder.VAE, 0, runs)
    ladder.share_upstream(cfg, out, runs)
    cell = run_paths(cfg, runs).cell
    return {d: (cell / d).is_symlink() for d in ("vision", "latents", "memory", "controller")}


def test_a_rung_that_differs_only_in_iterate_shares_round_zero_c(tmp_path):
    ladder = _ladder()
    runs = tmp_path / "runs"
    made = _finish_round_zero(ladder, ROOT / "configs/ladder/m512_shared_it1.yaml", runs)
    lr = ROOT / "configs/ladder/m512_shared_it1_lr.yaml"  # iterate.memory_lr only
    assert _shared(ladder, lr, runs) == dict.fromkeys(("vision", "latents", "memory",
                                                       "controller"), True)
    cell = runs / "ladder_m512_shared_it1_lr" / "vae" / "seed0"
    assert (cell / "controller").resolve() == (made.cell / "controller").resolve()


def test_a_rung_with_another_c_search_shares_v_and_m_but_never_c(tmp_path):
    ladder = _ladder()
    runs = tmp_path / "runs"
    base = ROOT / "configs/ladder/m512_shared_it1.yaml"
    _finish_round_zero(ladder, base, runs)
    values = yaml.safe_load(base.read_text())
    values["experiment"] = "ladder_popsize32"
    values["controller_train"]["popsize"] = 32
    other = tmp_path / "popsize32.yaml"
    other.write_text("# a rung with a smaller CMA-ES population\n" + yaml.safe_dump(values))
    assert _shared(ladder, other, runs) == {"vision": True, "latents": True, "memory": True,
                                            "controller": False}


def test_doom_full_is_the_h30_round_rung_with_the_speed_options_stage_for_stage():
    """``configs/experiments/doom_full.yaml`` states the scores of the ladder rung
    ``m512_shared_h30_it1_fast``: every stage of it must have that rung's identity (seed 0),
    and a changed key of either file breaks it. Its V, M, C and round are not the fp32
    rung's (``m512_shared_h30_it1``, what doom_full was before)."""
    from jepa_wm import contract, pipeline

    configs = ROOT / "configs"

    def ladder(rung):
        return pipeline.resolve([configs / "experiments" / "doom_fast.yaml",
                                 configs / "variants" / "vae.yaml",
                                 configs / "ladder" / f"{rung}.yaml"], 0, "runs")
    rung, fp32 = ladder("m512_shared_h30_it1_fast"), ladder("m512_shared_h30_it1")
    full = pipeline.resolve([configs / "experiments" / "doom_full.yaml",
                             configs / "variants" / "vae.yaml"], 0, "runs")
    for stage in contract.STAGE_ORDER:
        assert contract.identity(stage, full) == contract.identity(stage, rung), stage
    for stage in ("train-vision", "train-memory", "train-controller", "iterate"):
        assert contract.identity(stage, full) != contract.identity(stage, fp32), stage
    other = pipeline.resolve([configs / "experiments" / "doom_full.yaml",
                              configs / "variants" / "vae.yaml"], 0, "runs",
                             overrides={"iterate.episodes": 200})
    assert contract.identity("iterate", other) != contract.identity("iterate", rung)


def _only_row(lines: list[str], name: str, left_out: str) -> list[str]:
    """The cells of the one table row of ``name``; no row of ``left_out``."""
    table = [line for line in lines if line.startswith(f"| {name} |")]
    assert len(table) == 1 and not any(line.startswith(f"| {left_out}") for line in lines)
    return [c.strip() for c in table[0].strip("|").split("|")]


def test_a_v_on_a_rung_is_compared_with_the_vae_on_the_same_seeds():
    """The verdict table pairs a V's seeds with the VAE's on the same rung (other rungs and
    unpaired seeds left out) and reports the mean difference with its CI."""
    ladder = _ladder()

    def row(rung, variant, seed, real):
        name = rung + ("" if variant == "vae" else f" [{variant}]")
        return {"rung": name, "variant": variant, "seed": seed,
                "results": {"real_mean": real}}

    rows = [row("h30", "vae", 0, 700.0), row("h30", "vae", 1, 500.0),
            row("h30", "vae", 2, 600.0), row("h30", "jepa_ema", 0, 650.0),
            row("h30", "jepa_ema", 1, 560.0), row("h30", "jepa_ema", 3, 900.0),
            row("other", "jepa_ema", 2, 100.0), row("h30", "random", 0, None)]
    cells = _only_row(ladder.variant_summary(rows), "h30", left_out="other")
    assert cells[:5] == ["h30", "jepa_ema", "0, 1", "650.0, 560.0", "700.0, 500.0"]
    assert cells[5].startswith("+5.0 [") and cells[6] == "1 of 2"
    assert ladder.variant_summary([row("h30", "vae", 0, 700.0)]) == []


def test_the_tau_table_gives_each_real_score_its_ci():
    """benchmarks/tau_table.py: a bootstrap CI over the episodes when the row has them, else
    mean ± 1.96 standard errors, marked."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tau_table

    scores = [100.0, 300.0] * 25
    assert tau_table.real_ci({"real_scores": scores, "real_mean": 200.0}, 50) == "[172, 228]"
    std = 100.0  # the population std of those scores; SE = std / sqrt(n - 1)
    assert tau_table.real_ci({"real_mean": 200.0, "real_std": std}, 50) == "[172, 228]*"


def test_an_option_rung_is_compared_with_the_rung_whose_v_it_links(tmp_path):
    """A rung checked on another rung's store and V (``share_upstream`` links them) names
    that rung as its base, and the options table pairs the two on the same seeds."""
    ladder = _ladder()
    runs = tmp_path / "runs"
    made = _finish_round_zero(ladder, ROOT / "configs/ladder/m512_shared_h30.yaml", runs)
    linked = _shared(ladder, ROOT / "configs/ladder/m512_shared_h30_pack.yaml", runs)
    assert linked["vision"] and not linked["memory"]  # packing changes M
    pack = runs / "ladder_m512_shared_h30_pack" / "vae" / "seed0"
    assert ladder.base_rung(pack) == "ladder_m512_shared_h30"
    assert ladder.base_rung(made.cell) is None

    def row(rung, seed, real, base=None):
        return {"rung": rung, "variant": "vae", "seed": seed, "base": base,
                "results": {"real_mean": real}}

    rows = [row("h30", 0, 726.3), row("h30", 1, 748.0), row("h30", 2, 337.8),
            row("pack", 0, 861.4, "h30"), row("pack", 1, 553.4, "h30"),
            row("pack", 3, 900.0, "h30"), row("lonely", 0, 100.0, "gone")]
    cells = _only_row(ladder.option_summary(rows), "pack", left_out="lonely")
    assert cells[:5] == ["pack", "h30", "0, 1", "861.4, 553.4", "726.3, 748.0"]
    assert cells[5].startswith("-29.8 [") and cells[6] == "1 of 2"


def test_a_row_whose_folder_is_gone_keeps_its_budget_on_the_day_m_changed(tmp_path):
    """A fresh machine has no run folders: the recorded rows stand as recorded. A row of the
    day the M objective changed is not re-labelled "old M objective" for its date alone; a
    row of an earlier day is."""
    import json

    ladder = _ladder()
    day = ladder.M_REVISION_2.strftime("%Y-%m-%d")
    row = {"rung": "ladder_x", "variant": "vae", "seed": 0, "budget": "M 512",
           "recorded": day, "results": {}, "wall": {}}
    record = tmp_path / "ladder.json"
    record.write_text(json.dumps([row, {**row, "seed": 1, "recorded": "2026-12-02"}]))
    (tmp_path / "runs").mkdir()
    rows = ladder.merged_rows(tmp_path / "runs", record)
    assert [r["budget"] for r in rows] == ["M 512", "M 512; old M objective"]
    assert json.loads(record.read_text()) == rows


def test_a_record_that_does_not_parse_is_refused_and_left_as_it_was(tmp_path):
    """Two ladders run side by side merge into one record: one that reads a half-written or
    damaged record must stop, never take it for an empty one and write its own rows over
    the rows of earlier sessions."""
    import pytest

    from jepa_wm.io import UserError

    ladder = _ladder()
    record = tmp_path / "ladder.json"
    damaged = '[{"rung": "ladder_x", "variant": "vae", "seed": 0, "bud'
    record.write_text(damaged)
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="ladder.json: not valid JSON"):
        ladder.merged_rows(tmp_path / "runs", record)
    assert record.read_text() == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ladder.json", "runs"]


def test_a_partial_rerun_keeps_the_finished_row_and_adds_what_v_knows(tmp_path):
    """A rung re-run up to its probes (say on a new machine) leaves the recorded scores in
    place and adds its V's probe scores to that row and to the report's probe table."""
    import json

    ladder = _ladder()
    rung = ROOT / "configs" / "ladder" / "m512_shared_h30.yaml"
    runs = tmp_path / "runs"
    cfg, _ = ladder.rung_config(rung, ladder.VAE, 0, runs)
    from jepa_wm.contract import run_paths
    from jepa_wm.pipeline import save_config

    paths = run_paths(cfg, runs)
    probe = paths.cell / "probe"
    probe.mkdir(parents=True)
    (probe / "probes.json").write_text(json.dumps({"scores": {"probe_player_x": 0.625}}))
    save_config(cfg, paths)
    finished = {"rung": cfg.experiment, "variant": "vae", "seed": 0, "budget": "M 512",
                "recorded": "2026-12-04", "wall": {}, "cmaes_s": 0.0,
                "fidelity": {"hazard_early": 0.00105, "hazard_last2": 0.22,
                             "touching_ratio": 0.687, "touching_share": 0.71,
                             "touching_death_share": 0.78},
                "results": {"real_mean": 726.3, "real_scores": [700.0, 752.6]}}
    out = tmp_path / "ladder.md"
    out.with_suffix(".json").write_text(json.dumps([finished]))
    text = ladder.write_results(runs, out, "test")
    (row,) = json.loads(out.with_suffix(".json").read_text())
    assert row["results"] == finished["results"]
    assert row["probes"] == {"probe_player_x": 0.625}
    assert row["probed"].endswith(": V re-trained")
    assert f"| {cfg.experiment} | 0 | 0.625 | {row['probed']} |" in text
    assert "| 726.3 ± —" in text
    assert "| 1.05 / 220 (210x) |" in text  # M's hazard far from / at a death
    assert "| 0.69 (0.71 / 0.78) |" in text  # touching: M / game (M's share / deaths')
    more = {"probe_player_x": 0.625, "probe_death_next": 0.25}  # a later probe revision
    (probe / "probes.json").write_text(json.dumps({"scores": more}))
    ladder.write_results(runs, out, "test")
    (row,) = json.loads(out.with_suffix(".json").read_text())
    assert row["probes"] == more and row["results"] == finished["results"]
    (probe / "probes.json").write_text(json.dumps({"scores": {"probe_player_x": 0.5}}))
    ladder.write_results(runs, out, "test")  # fewer targets: not the newer probes, kept out
    (row,) = json.loads(out.with_suffix(".json").read_text())
    assert row["probes"] == more


def test_a_row_at_a_compute_budget_names_it_and_the_steps_v_trained(tmp_path):
    """A V trained to a FLOPs budget (jepa_ema_flops.yaml) shows that budget and the steps
    it gave, read from V's metrics, not the rung's max_steps, which it did not train."""
    import json

    from jepa_wm.contract import run_paths
    from jepa_wm.pipeline import save_config

    ladder = _ladder()
    runs = tmp_path / "runs"
    variant = ROOT / "configs/variants/jepa_ema_flops.yaml"
    cfg, _ = ladder.rung_config(ROOT / "configs/ladder/m512_shared_h30.yaml", variant, 0, runs)
    assert cfg.vision_train.max_steps == 4000 and cfg.vision_train.max_flops == 5.881e13
    paths = run_paths(cfg, runs)
    save_config(cfg, paths)
    (row,) = ladder.rung_rows(runs)
    assert row["rung"] == "ladder_m512_shared_h30 [jepa_ema_flops]"
    assert "V z 32, 5.881e+13 FLOPs = ? steps x 64," in row["budget"]  # V not trained yet
    (paths.cell / "vision").mkdir()
    (paths.cell / "vision" / "metrics.json").write_text(json.dumps({"steps": 6281}))
    (row,) = ladder.rung_rows(runs)
    assert "V z 32, 5.881e+13 FLOPs = 6281 steps x 64," in row["budget"]


def test_a_row_whose_v_the_epochs_stopped_early_names_the_steps_it_trained(tmp_path):
    """doom_fast's max_epochs 1 is 974 steps of 64 on 200 episodes: a rung asking for 4,000
    without raising it trained 974, and its row says so instead of "4000 x 64"."""
    import json

    from jepa_wm.contract import run_paths
    from jepa_wm.pipeline import save_config

    ladder = _ladder()
    runs = tmp_path / "runs"
    cfg, _ = ladder.rung_config(ROOT / "configs/ladder/m512_shared_h30.yaml", ladder.VAE, 0,
                                runs)
    assert cfg.vision_train.max_steps == 4000 and cfg.vision_train.max_epochs == 1
    paths = run_paths(cfg, runs)
    save_config(cfg, paths)
    (paths.cell / "vision").mkdir()
    (paths.cell / "vision" / "metrics.json").write_text(json.dumps({"steps": 974}))
    (row,) = ladder.rung_rows(runs)
    assert "V z 32, 1 ep = 974 steps (max_steps 4000) x 64," in row["budget"]
    (paths.cell / "vision" / "metrics.json").write_text(json.dumps({"steps": 4000}))
    (row,) = ladder.rung_rows(runs)
    assert "V z 32, 4000 x 64," in row["budget"]


def test_the_scaling_curve_is_read_from_the_ladders_rows(tmp_path):
    """benchmarks/scaling.py through its CLI: per V and data budget the seeds' real means,
    their mean and CI, the frames of the seeds' stores, the VAE-paired difference, each V
    against itself one budget down, a budget not run listed as such, and the plot; rungs at
    one budget are refused in one line."""
    import json
    import subprocess

    def row(rung, variant, seed, real, frames):
        name = rung + ("" if variant == "vae" else f" [{variant}]")
        return {"rung": name, "variant": variant, "seed": seed, "frames": frames,
                "wall": {"collect": 60.0, "evaluate": 60.0}, "budget": "",
                "fidelity": {"death_sum_per_episode": 1.0, "policy_survival_ratio": 0.9},
                "results": {"real_mean": real}}

    small, full = "ladder_m512_shared_h30_it1_e200", "ladder_m512_shared_h30_it1"
    record = tmp_path / "transfer_ladder.json"
    record.write_text(json.dumps([
        row(small, "vae", 0, 400.0, 70000), row(small, "vae", 1, 500.0, None),
        row(full, "vae", 0, 800.0, 368067), row(full, "vae", 1, 700.0, 370978),
        row(small, "jepa_ema", 0, 300.0, None), row(full, "jepa_ema", 1, 200.0, None)]))
    out = tmp_path / "scaling.md"
    rungs = [str(ROOT / "configs/ladder" / f"{n}.yaml") for n in
             ("m512_shared_h30_it1_e200", "m512_shared_h30_it1", "m512_shared_h30_it1_e3000")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/scaling.py"), *rungs, "--runs",
         str(tmp_path / "none"), "--record", str(record), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT / "benchmarks")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| vae | 200 | 70,000 | 0, 1 | 400.0, 500.0 | 450.0 [400, 500] | 0 of 2 |" in text
    assert "| vae | 1,000 | 369,522 | 0, 1 | 800.0, 700.0 | 750.0 [700, 800] | 1 of 2 |" in text
    assert "| vae | 3,000 | — | not run |" in text
    # the JEPA's stores are the VAE's (same rung and seed): their frames are known
    assert "| jepa_ema | 1,000 | 370,978 | 1 (of 2) | 200.0 |" in text
    assert "| 200 | jepa_ema | 0 | 300.0 | 400.0 | -100.0 [-100, -100] | 0 of 1 | 0.00 |" in text
    # each V against itself one budget down, on the seeds both budgets ran (the JEPA's
    # two budgets share no seed: no row)
    assert ("| vae | 200 -> 1,000 | 0, 1 | 800.0, 700.0 | 400.0, 500.0 | +300.0 [+200, +400] "
            "| 2 of 2 | 1.00 |") in text
    assert "| jepa_ema | 200 -> 1,000 |" not in text
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert record.read_text().count('"rung"') == 6  # read, never rewritten
    one = subprocess.run([sys.executable, str(ROOT / "benchmarks/scaling.py"), rungs[1],
                          "--record", str(record), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT / "benchmarks")
    assert one.returncode != 0
    assert one.stderr.strip().splitlines()[-1] == (
        "scaling: rungs: give rungs at two data budgets or more (got episodes [1000])")


def test_the_why_table_sets_each_figure_of_a_v_beside_the_vaes_on_the_same_seeds():
    """Beside the verdict: each figure's mean over the paired seeds, V / VAE; a row that
    links its V takes that V's probes from the row that trained it; a figure only some seeds
    have says how many."""
    ladder = _ladder()

    def row(rung, variant, seed, real, hazard_last2, touching=None, probes=None, base=None):
        return {"rung": rung + ("" if variant == "vae" else f" [{variant}]"),
                "variant": variant, "seed": seed, "base": base, "probes": probes or {},
                "fidelity": {"hazard_early": 0.001, "hazard_last2": hazard_last2,
                             "touching_share": touching},
                "results": {"real_mean": real, "dream_mean": 2 * real}}

    rows = [row("h30", "vae", 0, 800.0, 0.2, 0.7), row("h30", "vae", 1, 700.0, 0.1),
            row("trained", "jepa_ema", 0, 0.0, 0.0, probes={"probe_fireball_touching": 0.6}),
            row("h30", "jepa_ema", 0, 200.0, 0.05, 0.4, base="trained [jepa_ema]"),
            row("h30", "jepa_ema", 1, 300.0, 0.07, 0.5),
            row("other", "jepa_ema", 0, 100.0, 0.01)]
    lines = ladder.why_table(rows)
    header = next(line for line in lines if line.startswith("| rung |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(names, _only_row(lines, "h30", left_out="other")))
    assert cells["seeds"] == "0, 1" and cells["V"] == "jepa_ema"
    assert cells["sharpness"] == "60 / 150"
    assert cells["hazard share where a fireball touches"] == "0.45 / 0.70 (1 of 2)"
    assert cells["C dream / real"] == "2.00 / 2.00"
    assert cells["z's fireball touching AP"] == "0.60 (1 of 2) / —"
    assert ladder.why_table([row("h30", "vae", 0, 800.0, 0.2)]) == []


def test_a_row_whose_v_the_code_would_no_longer_make_is_tagged_and_left_out(
        tmp_path, doom_store, monkeypatch):
    """A task-head JEPA trained before the task-window fix (its V's identity is the old
    code's) is tagged in its row's budget and the probe table, and left out of the pairing
    with the VAE; the same V under today's identity is not tagged."""
    import json

    from jepa_wm import contract
    from jepa_wm.contract import run_paths
    from jepa_wm.data.store import RolloutStore
    from jepa_wm.io import hash_obj
    from jepa_wm.pipeline import save_config

    ladder = _ladder()
    runs = tmp_path / "runs"
    rung = ROOT / "configs" / "ladder" / "m512_shared_h30.yaml"
    variant = ROOT / "configs" / "variants" / "jepa_ema_task.yaml"
    cfg, _ = ladder.rung_config(rung, variant, 0, runs)
    paths = run_paths(cfg, runs)
    save_config(cfg, paths)
    (paths.cell / "pipeline.json").write_text(json.dumps(
        {"seed": 0, "stages": {"collect": {"out": str(doom_store)}}}))
    (paths.cell / "probe").mkdir()
    (paths.cell / "probe" / "probes.json").write_text(json.dumps(
        {"scores": {"probe_death_next": 0.1}}))
    (paths.cell / "vision").mkdir()
    upstream = hash_obj(RolloutStore(doom_store).content_meta)
    now = contract.identity("train-vision", cfg, upstream=upstream)
    with monkeypatch.context() as m:
        m.setattr(contract, "_task_windows", lambda stage, values: {})  # the old code
        old = contract.identity("train-vision", cfg, upstream=upstream)
    assert old != now
    for made, tagged in ((old, True), (now, False)):
        (paths.cell / "vision" / "DONE.json").write_text(json.dumps({"config_hash": made}))
        (row,) = ladder.rung_rows(runs)
        assert row["budget"].endswith(f"; {ladder.OLD_V}") == tagged
        assert (ladder.OLD_V in "\n".join(ladder.probe_table([row]))) == tagged
        row["results"] = {"real_mean": 200.0}
        vae = {**row, "variant": "vae", "rung": cfg.experiment, "budget": "M 512"}
        assert bool(ladder.vae_pairs([row, vae])) != tagged


def test_a_cell_made_with_options_this_code_does_not_know_is_passed_over(tmp_path, capsys):
    """A cell whose config this code cannot read (newer code's options in it) shares
    nothing, and the other cells still share: it stopped the whole rung before."""
    ladder = _ladder()
    runs = tmp_path / "runs"
    base = ROOT / "configs/ladder/m512_shared_it1.yaml"
    made = _finish_round_zero(ladder, base, runs)
    alien = runs / "ladder_from_the_future" / "vae" / "seed0"
    alien.mkdir(parents=True)
    values = yaml.safe_load((made.cell / "config.yaml").read_text())
    values["controller_train"]["warp_drive"] = True
    (alien / "config.yaml").write_text(yaml.safe_dump(values))
    lr = ROOT / "configs/ladder/m512_shared_it1_lr.yaml"
    assert _shared(ladder, lr, runs) == dict.fromkeys(("vision", "latents", "memory",
                                                       "controller"), True)
    assert "nothing shared from" in capsys.readouterr().out


def test_pair_prints_one_rung_against_another_on_their_common_seeds(tmp_path):
    """``ladder.py --pair RUNG OTHER`` (the real CLI, on a record file) pairs the two rungs'
    real means on the seeds both scored, sets their fidelity side by side, and names the
    rungs the record has when one is not in it."""
    import json
    import subprocess

    def row(rung, seed, real, ratio):
        return {"rung": rung, "variant": "vae", "seed": seed, "budget": "",
                "results": {"real_mean": real}, "fidelity": {"policy_survival_ratio": ratio}}

    rows = [row("full", 0, 800.0, 1.1), row("full", 1, 760.0, 0.9), row("full", 2, 700.0, 1.0),
            row("fast", 0, 780.0, 1.0), row("fast", 1, 790.0, 0.95), row("fast", 3, 10.0, 2.0)]
    (tmp_path / "record.json").write_text(json.dumps(rows))

    def pair(*names):
        return subprocess.run(
            [sys.executable, "ladder.py", "--pair", *names, "--out", str(tmp_path / "record.md")],
            cwd=ROOT / "benchmarks", capture_output=True, text=True)

    done = pair("fast", "full")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    cells = _only_row(lines, "fast", left_out="full")
    assert cells[:5] == ["fast", "full", "0, 1", "780.0, 790.0", "800.0, 760.0"]
    assert cells[5].startswith("+5.0 [") and cells[6] == "1 of 2"
    by_seed = [line for line in lines if line.startswith(("| 0 |", "| 1 |"))]
    assert len(by_seed) == 4 and "| 1 | fast |" in by_seed[2] and "0.95" in by_seed[2]
    assert not any(line.startswith(("| 2 |", "| 3 |")) for line in lines)
    unknown = pair("fast", "nowhere")
    assert unknown.returncode != 0
    assert unknown.stderr.strip().splitlines()[-1] == \
        "--pair: no rung 'nowhere' in the record; it has fast, full"


def test_a_cell_whose_store_was_deleted_keeps_its_frames(tmp_path):
    """The scaling curve plots frames: a cell whose store was deleted to free disk reads
    them from its latent set's record of the store (the e3000 points had none)."""
    import json

    ladder = _ladder()
    store, cell = tmp_path / "data" / "store", tmp_path / "vae" / "seed0"
    (store / "rollouts").mkdir(parents=True)
    (store / "rollouts" / "meta.json").write_text(json.dumps({"frames": 1234}))
    (cell / "latents").mkdir(parents=True)
    (cell / "pipeline.json").write_text(json.dumps({"stages": {}, "store": str(store)}))
    (cell / "latents" / "meta.json").write_text(json.dumps(
        {"store_identity": {"frames": 1234, "path": str(store / "rollouts")}}))
    assert ladder.store_frames(cell) == 1234
    (store / "rollouts" / "meta.json").unlink()
    assert ladder.store_frames(cell) == 1234
    (cell / "latents" / "meta.json").unlink()
    assert ladder.store_frames(cell) is None
