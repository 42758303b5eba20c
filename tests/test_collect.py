"""collect() and the collect/inspect CLI on the real envs: reproducible bytes, resume after
SIGKILL, append, and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jepa_wm.data.collect import HoldRandomPolicy, collect
from jepa_wm.data.store import RolloutStore
from jepa_wm.io import UserError

DOOM = "VizdoomTakeCover-v1"


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "jepa_wm.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=240, check=False, **kwargs)


def committed_episodes(root: Path) -> int:
    """Episodes meta.json lists (0 before the store exists); meta.json is written atomically."""
    meta = root / "meta.json"
    return json.loads(meta.read_text())["episodes"] if meta.exists() else 0


def store_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a store (the DONE marker aside) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "DONE.json"}


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    one = collect(DOOM, tmp_path / "one", episodes=5, seed=3, workers=1,
                  episodes_per_shard=2, progress=False)
    collect(DOOM, tmp_path / "two", episodes=5, seed=3, workers=2, episodes_per_shard=2,
            progress=False)
    a, b = store_bytes(tmp_path / "one"), store_bytes(tmp_path / "two")
    assert set(a) >= {"meta.json", "shard-00002/frames.npy"} and a == b
    assert one["episodes"] == 5 and one["collected"] == 5
    other = collect(DOOM, tmp_path / "other", episodes=1, seed=4, workers=1, progress=False)
    assert (RolloutStore(tmp_path / "other").frames(np.arange(50)).tobytes()
            != RolloutStore(tmp_path / "one").frames(np.arange(50)).tobytes())
    assert other["episodes"] == 1


def test_append_and_rerun(tmp_path):
    out = tmp_path / "s"
    collect(DOOM, out, episodes=2, seed=0, workers=2, episodes_per_shard=2, progress=False)
    again = collect(DOOM, out, episodes=2, seed=0, workers=2, episodes_per_shard=2,
                    progress=False)
    assert again["collected"] == 0 and again["episodes"] == 2  # complete: nothing to do
    grown = collect(DOOM, out, episodes=4, seed=0, workers=2, episodes_per_shard=2,
                    progress=False)
    assert grown["collected"] == 2 and grown["episodes"] == 4
    collect(DOOM, tmp_path / "direct", episodes=4, seed=0, workers=1, episodes_per_shard=2,
            progress=False)
    assert store_bytes(out) == store_bytes(tmp_path / "direct")
    with pytest.raises(UserError, match="already holds 4 episodes"):
        collect(DOOM, out, episodes=3, seed=0, episodes_per_shard=2, progress=False)
    with pytest.raises(UserError, match="image_size=64, asked for 32"):
        collect(DOOM, out, episodes=4, seed=0, image_size=32, episodes_per_shard=2,
                progress=False)


def test_carracing_box_store(tmp_path):
    out = tmp_path / "car"
    summary = collect("CarRacing-v3", out, episodes=2, seed=0, workers=2,
                      max_episode_steps=12, progress=False)
    store = RolloutStore(out)
    assert summary["frames"] == 24 and store.num_episodes == 2
    actions = store.actions(np.arange(24))
    assert actions.shape == (24, 3) and actions.dtype == np.float32
    assert (actions[:, 0] >= -1).all() and (actions[:, 1:] >= 0).all() and (actions <= 1).all()
    assert store.truncated(np.array([11, 23])).all()
    assert store.frames(np.arange(2)).shape == (2, 3, 64, 64)


def test_hold_random_policy_holds_actions():
    import gymnasium as gym

    space = gym.spaces.Box(-1, 1, (2,), np.float32)  # continuous: a new draw always differs
    policy = HoldRandomPolicy(space, seed=0, max_hold=4)
    policy.reset(2)
    policy.start_episode(0, 7)
    policy.start_episode(1, 7)
    acts = np.stack([policy.act(np.zeros((2, 3, 8, 8), np.uint8)) for _ in range(400)])
    np.testing.assert_array_equal(acts[:, 0], acts[:, 1])  # depends on the episode only
    changes = np.flatnonzero(np.any(np.diff(acts[:, 0], axis=0) != 0, axis=1))
    holds = np.diff(changes)
    assert holds.min() >= 1 and holds.max() <= 4 and holds.mean() > 2.0  # uniform 1..4
    assert space.contains(acts[0, 0])


def test_max_hold_reaches_the_store_and_its_identity(tmp_path):
    from jepa_wm.config import data_hash, experiment_parser

    r = cli("collect", "--env", DOOM, "--episodes", 1, "--max_hold", 3, "--out",
            tmp_path / "h3")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "h3" / "meta.json").read_text())["policy"] == \
        "hold_random(max_hold=3)"
    # another hold is another store: refused on append, and another data hash
    r = cli("collect", "--env", DOOM, "--episodes", 2, "--max_hold", 5, "--out",
            tmp_path / "h3")
    assert r.returncode == 2 and "max_hold=3" in r.stderr
    parser = experiment_parser()
    assert data_hash(parser.parse_args(["--max_hold", "3"])) != \
        data_hash(parser.parse_args(["--max_hold", "5"]))
    with pytest.raises(UserError, match="max_hold 0"):
        collect(DOOM, tmp_path / "h0", episodes=1, max_hold=0, progress=False)


@pytest.mark.faults
def test_resume_after_sigkill_gives_the_uninterrupted_store(tmp_path):
    out = tmp_path / "killed"
    args = ["collect", "--env", DOOM, "--episodes", 40, "--out", out, "--seed", 5,
            "--workers", 2, "--shard_episodes", 2]
    proc = subprocess.Popen([sys.executable, "-m", "jepa_wm.cli", *map(str, args)],
                            env={**os.environ, "WANDB_MODE": "disabled"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while committed_episodes(out) == 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its env workers
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = RolloutStore(out).num_episodes
    assert 2 <= killed_at < 40 and not (out / "DONE.json").exists()
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert f"{40 - killed_at} episodes" in done.stdout  # only the missing ones collected
    collect(DOOM, tmp_path / "whole", episodes=40, seed=5, workers=1, episodes_per_shard=2,
            progress=False)
    assert store_bytes(out) == store_bytes(tmp_path / "whole")
    rerun = cli(*args)
    assert rerun.returncode == 0 and "nothing to do" in rerun.stdout


@pytest.mark.faults
def test_bad_inputs(tmp_path, doom_store):
    with pytest.raises(UserError, match="NoSuchEnv-v0"):
        collect("NoSuchEnv-v0", tmp_path / "a", episodes=1, progress=False)
    with pytest.raises(UserError, match="episodes -1"):
        collect(DOOM, tmp_path / "b", episodes=-1, progress=False)
    with pytest.raises(UserError, match="workers 0"):
        collect(DOOM, tmp_path / "b", episodes=1, workers=0, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    copy = tmp_path / "store"
    shutil.copytree(doom_store, copy)
    before = store_bytes(copy)
    r = cli("collect", "--env", "CarRacing-v3", "--episodes", 4, "--out", copy)
    assert r.returncode == 2 and "env_id='VizdoomTakeCover-v1'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert store_bytes(copy) == before  # nothing overwritten


@pytest.mark.faults
def test_inspect_verifies_and_catches_a_flipped_byte(tmp_path, doom_store):
    ok = cli("inspect", doom_store)
    assert ok.returncode == 0, ok.stderr
    assert "VizdoomTakeCover-v1" in ok.stdout and "verified: 2 shards" in ok.stdout
    copy = tmp_path / "store"
    shutil.copytree(doom_store, copy)
    frames = copy / "shard-00001" / "frames.npy"
    data = bytearray(frames.read_bytes())
    data[len(data) // 2] ^= 0x01
    frames.write_bytes(bytes(data))
    bad = cli("inspect", copy)
    assert bad.returncode == 2
    assert "shard-00001/frames.npy: checksum mismatch" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
