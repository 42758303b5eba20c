"""The CLI and the shared config schema, through the real entry point in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def jepa_wm(*args, cwd=ROOT):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "jepa_wm.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_usage_lists_every_stage():
    out = jepa_wm()
    assert out.returncode == 0
    for stage in ("collect", "inspect", "train-vision", "encode", "train-memory", "fidelity",
                  "train-controller", "evaluate", "run", "sweep", "report"):
        assert stage in out.stdout


@pytest.mark.parametrize("env, expected", [
    ({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "PASSIVE"}, None)])
def test_openmp_threads_spin_briefly_unless_the_user_says_otherwise(env, expected):
    """Importing jepa_wm (as the CLI does first) caps libgomp's spin-wait, which beside
    another job made M train 22x slower; a user's own OpenMP setting wins."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, jepa_wm; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)


def test_unknown_stage_is_one_line_error():
    out = jepa_wm("colect")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "'colect'" in out.stderr and "collect" in out.stderr


def test_print_config_layers_files_left_to_right(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("experiment: a\nseed: 1\nvision_train:\n  batch_size: 16\n")
    b.write_text("seed: 2\nvision_train:\n  max_epochs: 3\n")
    out = jepa_wm("inspect", "--config", a, "--config", b, "--print_config")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["experiment"] == "a" and cfg["seed"] == 2
    assert cfg["vision_train"]["batch_size"] == 16 and cfg["vision_train"]["max_epochs"] == 3


@pytest.mark.parametrize("content, named", [
    ("vision_train:\n  bacth_size: 3\n", "bacth_size"),
    ("episodez: 3\n", "episodez"),
    ("seed: not-a-number\n", "seed"),
    ("controller_train:\n  popsize: many\n", "popsize"),
])
def test_bad_config_fails_at_parse_time_naming_the_key(tmp_path, content, named):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    out = jepa_wm("inspect", "--config", bad, "--print_config")
    assert out.returncode == 2
    assert named in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_file_is_valid_yaml_with_a_header_comment(path):
    text = path.read_text()
    assert text.startswith("#"), f"{path.name}: start with a comment saying what it is for"
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "ladder").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_ladder_rung_parses_over_doom_fast_with_its_own_experiment(path):
    """A rung is layered last over doom_fast and the VAE (benchmarks/ladder.py); an unknown
    key fails here, and its own experiment name keeps its runs apart from every other's."""
    from jepa_wm.pipeline import resolve

    cfg = resolve([ROOT / "configs/experiments/doom_fast.yaml",
                   ROOT / "configs/variants/vae.yaml", path], 0, "runs")
    assert cfg.experiment == f"ladder_{path.stem}"


@pytest.mark.parametrize("experiment", sorted((ROOT / "configs" / "experiments").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_experiment_parses_with_every_variant(experiment):
    """Each experiment file (doom_takecover.yaml included) layered with each variant
    resolves against the schema: an unknown key or a bad value fails here, not in a run.
    No jsonargparse metadata (``__path__``: where a file was read from) is in the result,
    so none reaches a hash or a saved config."""
    from jepa_wm.config import to_dict
    from jepa_wm.pipeline import resolve

    def meta_keys(d):
        return [k for k in d if k.startswith("__")] + [
            m for v in d.values() if isinstance(v, dict) for m in meta_keys(v)]

    for variant in sorted((ROOT / "configs" / "variants").glob("*.yaml")):
        cfg = resolve([experiment, variant], 0, "runs")
        assert not meta_keys(to_dict(cfg)), (variant.stem, meta_keys(to_dict(cfg)))
        assert cfg.experiment == yaml.safe_load(experiment.read_text())["experiment"]
        assert cfg.variant == (yaml.safe_load(variant.read_text()).get("variant")
                               or variant.stem)
