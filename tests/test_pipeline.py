"""The pipeline's bookkeeping on the real configs: where a run goes, which store it shares,
what each stage is handed, and when a stage counts as done. (The real pipeline end to end,
and a second ``run`` of a finished run, are in test_sweep.py next to the smoke sweep.)"""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest
import yaml

from jepa_wm import contract, pipeline
from jepa_wm.io import UserError, mark_done

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "experiments" / "smoke.yaml"
VARIANTS = ROOT / "configs" / "variants"


def resolve(tmp_path, variant="vae", seed=0, **overrides):
    return pipeline.resolve([SMOKE, VARIANTS / f"{variant}.yaml"], seed, tmp_path, overrides)


def test_variants_share_the_store_of_one_budget_and_seed_only(tmp_path):
    vae, jepa = resolve(tmp_path, "vae"), resolve(tmp_path, "jepa_ema")
    p_vae, p_jepa = contract.run_paths(vae, tmp_path), contract.run_paths(jepa, tmp_path)
    assert p_vae.store == p_jepa.store
    assert p_vae.rollouts.parent.parent == tmp_path / "smoke" / "data"
    assert p_vae.cell == tmp_path / "smoke" / "vae" / "seed0"
    assert p_jepa.cell == tmp_path / "smoke" / "jepa_ema" / "seed0"
    # another budget or seed never reuses the store
    more = contract.run_paths(resolve(tmp_path, "vae", episodes=7), tmp_path)
    other_seed = contract.run_paths(resolve(tmp_path, "vae", seed=1), tmp_path)
    assert len({p_vae.store, more.store, other_seed.store}) == 3


def test_overrides_apply_and_an_unknown_key_is_named(tmp_path):
    cfg = resolve(tmp_path, **{"controller_train.tau": 1.0})
    assert cfg.controller_train.tau == 1.0 and cfg.variant == "vae"
    with pytest.raises(UserError, match="tauu"):
        resolve(tmp_path, **{"controller_train.tauu": 1.0})


def test_variant_name_is_the_variant_key_or_the_file_stem(tmp_path):
    assert pipeline.variant_name(VARIANTS / "jepa_ema.yaml") == "jepa_ema"
    plain = tmp_path / "my_variant.yaml"
    plain.write_text("# no name\nseed: 3\n")
    assert pipeline.variant_name(plain) == "my_variant"
    with pytest.raises(UserError, match="not found"):
        pipeline.variant_name(tmp_path / "missing.yaml")


def test_each_stage_gets_its_inputs_and_its_own_folder(tmp_path):
    cfg = resolve(tmp_path)
    paths = contract.run_paths(cfg, tmp_path)
    cell = paths.cell
    stage_cfgs = {s: pipeline.stage_config(s, cfg, paths)[0] for s in contract.STAGE_ORDER}
    assert stage_cfgs["collect"].out == str(paths.rollouts)
    assert stage_cfgs["train-vision"].data == str(paths.rollouts)
    assert stage_cfgs["encode"].vision == str(cell / "vision" / "final.ckpt")
    assert stage_cfgs["train-memory"].latents == str(cell / "latents")
    assert stage_cfgs["train-controller"].memory == str(cell / "memory" / "final.ckpt")
    assert stage_cfgs["iterate"].controller == str(cell / "controller" / "best.npz")
    assert stage_cfgs["evaluate"].controller == str(cell / "iterate" / "best.npz")
    assert stage_cfgs["evaluate"].memory == str(cell / "iterate" / "final.ckpt")
    assert stage_cfgs["evaluate"].out == str(cell / "eval")
    # the experiment's values reach every stage
    assert all(c.vision_train.max_steps == 4 and c.episodes == 6 for c in stage_cfgs.values())


def test_a_redone_input_changes_the_downstream_fingerprint(tmp_path):
    cfg = resolve(tmp_path)
    paths = contract.run_paths(cfg, tmp_path)
    for stage in contract.STAGE_ORDER:
        mark_done(paths.stage_dir(stage), "h")
    encode_cfg, _ = pipeline.stage_config("encode", cfg, paths)
    vision_cfg, _ = pipeline.stage_config("train-vision", cfg, paths)
    before = pipeline.fingerprint("encode", encode_cfg, paths)
    vision_before = pipeline.fingerprint("train-vision", vision_cfg, paths)
    assert pipeline.fingerprint("encode", encode_cfg, paths) == before  # stable
    mark_done(paths.stage_dir("train-vision"), "h2")  # V trained again
    assert pipeline.fingerprint("encode", encode_cfg, paths) != before
    assert pipeline.fingerprint("train-vision", vision_cfg, paths) == vision_before
    assert not pipeline.is_complete(cfg, tmp_path)  # nothing recorded by the pipeline yet


def test_file_lock_excludes_a_second_holder(tmp_path):
    lock = tmp_path / "store" / ".lock"
    with pipeline.file_lock(lock), open(lock) as f, pytest.raises(BlockingIOError):
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock) as f:  # released
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_changed_config_keeps_the_previous_one(tmp_path, capsys):
    cfg = resolve(tmp_path)
    paths = contract.run_paths(cfg, tmp_path)
    pipeline.save_config(cfg, paths)
    saved = yaml.safe_load((paths.cell / "config.yaml").read_text())
    assert saved["variant"] == "vae" and saved["vision_train"]["max_steps"] == 4
    assert "out" not in saved and "config" not in saved
    pipeline.save_config(cfg, paths)  # same config: nothing moves
    assert not (paths.cell / "config.previous.yaml").exists()
    pipeline.save_config(resolve(tmp_path, **{"controller_train.generations": 5}), paths)
    assert yaml.safe_load((paths.cell / "config.previous.yaml").read_text()) == saved
    assert "config.previous.yaml" in capsys.readouterr().out


def test_a_config_from_older_code_without_a_neutral_key_is_the_same_config(tmp_path, capsys):
    """A key newer code added at its NEUTRAL value (``controller_train.kernel: eager``) does
    not make a finished cell's config "changed": nothing is moved aside, the file takes the
    new form. The same key at another value is a change."""
    cfg = resolve(tmp_path)
    paths = contract.run_paths(cfg, tmp_path)
    pipeline.save_config(cfg, paths)
    target = paths.cell / "config.yaml"
    saved = yaml.safe_load(target.read_text())
    older = {**saved, "controller_train": {k: v for k, v in saved["controller_train"].items()
                                           if k != "kernel"}}
    assert older != saved
    target.write_text(yaml.safe_dump(older))
    pipeline.save_config(cfg, paths)
    assert not (paths.cell / "config.previous.yaml").exists()
    assert yaml.safe_load(target.read_text()) == saved
    assert "changed" not in capsys.readouterr().out
    pipeline.save_config(resolve(tmp_path, **{"controller_train.kernel": "fused"}), paths)
    assert yaml.safe_load((paths.cell / "config.previous.yaml").read_text()) == saved


def test_a_config_that_differs_by_speed_only_keys_is_rewritten_in_place(tmp_path, capsys):
    """Other worker or thread counts compute the same: config.yaml takes the new counts,
    nothing is moved aside."""
    cfg = resolve(tmp_path)
    paths = contract.run_paths(cfg, tmp_path)
    pipeline.save_config(cfg, paths)
    target = paths.cell / "config.yaml"
    faster = resolve(tmp_path, **{"evaluate.workers": 3, "iterate.workers": 5, "workers": 1,
                                  "memory_train.threads": 1})
    pipeline.save_config(faster, paths)
    saved = yaml.safe_load(target.read_text())
    assert (saved["evaluate"]["workers"], saved["iterate"]["workers"], saved["workers"],
            saved["memory_train"]["threads"]) == (3, 5, 1, 1)
    assert not (paths.cell / "config.previous.yaml").exists()
    assert "changed" not in capsys.readouterr().out


def test_the_stage_table_matches_every_stage_parser():
    """Each stage's path flags in the table are the ones its CLI parser takes (besides
    --out), and the table's order reads only from earlier stages."""
    from jepa_wm.stages import build_parser

    for i, stage in enumerate(contract.STAGE_ORDER):
        parser, _ = build_parser(stage)
        flags = {a.dest for a in parser._actions}
        reads = set(contract.STAGE[stage].reads)
        assert reads <= flags, (stage, reads - flags)
        path_flags = {"data", "vision", "latents", "memory", "controller", "fidelity"}
        assert flags & path_flags == reads, stage
        assert set(contract.STAGE[stage].upstream) <= set(contract.STAGE_ORDER[:i])
    assert list(contract.COMMANDS)[:len(contract.STAGE_ORDER) + 1] == [
        "collect", "inspect", *contract.STAGE_ORDER[1:]]


@pytest.mark.parametrize("key, value, stages", [
    ("controller_train.precision", "bf16", ["fidelity", "train-controller", "iterate",
                                            "evaluate"]),
    ("iterate.memory_lr", 1e-4, ["iterate"]),
])
def test_a_later_option_is_part_of_the_stages_it_changes_only(tmp_path, key, value, stages):
    """An option added after run folders existed (the dream's precision, the rounds' M
    rate) changes the own identity of the stages that read it, and of none upstream (the
    stages downstream follow through their inputs' identities: test_stage_contract.py)."""
    cfg, changed_cfg = resolve(tmp_path), resolve(tmp_path, **{key: value})
    changed = [s for s in contract.STAGE_ORDER
               if contract.identity(s, cfg) != contract.identity(s, changed_cfg)]
    assert changed == stages


def test_a_dream_precision_other_than_32_or_bf16_is_refused_naming_the_key(tmp_path):
    with pytest.raises(UserError, match="precision"):
        resolve(tmp_path, **{"controller_train.precision": "16"})
