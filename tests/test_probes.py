"""Game state recorded at collection (real VizDoom) and the linear probes fitted to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jepa_wm import probes
from jepa_wm.data import RolloutStore
from jepa_wm.io import UserError
from tests.conftest import DOOM_STORE_SEED, write_test_latents

ROOT = Path(__file__).resolve().parents[1]


def test_the_stored_game_state_is_the_state_of_each_stored_frame(doom_store):
    """Replaying episode 0's stored actions from its seed gives the stored frames and, at
    every step, the stored state: the state row t belongs to frame t (not t + 1)."""
    from jepa_wm.data.collect import episode_seed
    from jepa_wm.envs import make_env, state_names
    from jepa_wm.envs.vizdoom import STATE_NAMES

    store = RolloutStore(doom_store)
    assert store.state_names == STATE_NAMES
    ep = store.episode(0)
    env = make_env("VizdoomTakeCover-v1", 64, game_state=True)
    try:
        assert state_names(env) == STATE_NAMES
        obs, info = env.reset(seed=episode_seed(DOOM_STORE_SEED, 0))
        for t in range(len(ep["actions"])):
            assert np.array_equal(obs, ep["frames"][t])
            np.testing.assert_array_equal(info["state"], ep["state"][t])
            obs, _, terminated, truncated, info = env.step(ep["actions"][t])
        assert terminated or truncated
    finally:
        env.close()


def test_game_state_values_are_what_they_say(doom_store):
    store = RolloutStore(doom_store)
    s = store.get("state", slice(None))
    col = {name: s[:, j] for j, name in enumerate(store.state_names)}
    assert np.isfinite(s[:, :4]).all()  # a stored frame is never after the episode's end
    assert ((col["health"] > 0) & (col["health"] <= 100)).all()
    assert np.array_equal(col["fireballs"], np.round(col["fireballs"])) and col["fireballs"].min() == 0
    seen = col["fireballs"] > 0
    assert 0.05 < seen.mean() < 0.95
    assert np.isfinite(col["fireball_screen_x"][seen]).all()
    assert np.isnan(col["fireball_screen_x"][~seen]).all()
    assert ((col["fireball_screen_x"][seen] >= 0) & (col["fireball_screen_x"][seen] <= 1)).all()
    assert (col["fireball_dist"][seen] > 0).all()
    assert np.ptp(col["player_y"]) > 100  # the player strafes along y in take-cover
    first = store.episode_starts
    assert np.all(col["player_y"][first] == col["player_y"][first[0]])  # same spawn point


def test_a_store_collected_without_game_state_has_the_same_frames_and_no_state(
        doom_store, tmp_path, monkeypatch):
    """Recording the state changes nothing else in the store; a store without it (as every
    store collected before) reads as before and says so when asked for the state."""
    from jepa_wm.data import collect as collect_mod

    monkeypatch.setattr(collect_mod, "state_names", lambda env: ())
    collect_mod.collect("VizdoomTakeCover-v1", tmp_path / "old", episodes=2,
                        seed=DOOM_STORE_SEED, workers=1, episodes_per_shard=2, progress=False)
    old, new = RolloutStore(tmp_path / "old"), RolloutStore(doom_store)
    assert old.state_names == () and "state" not in old.meta
    for e in range(2):
        a, b = old.episode(e), new.episode(e)
        assert set(a) == {"frames", "actions", "rewards", "terminated", "truncated"}
        for key in a:
            assert np.array_equal(a[key], b[key]), key
    with pytest.raises(UserError, match="records no game state"):
        old.get("state", [0])


def test_probes_recover_a_linear_target_and_not_an_unrelated_one():
    rng = np.random.default_rng(0)
    n, d = 4000, 8
    z = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    balls = (z @ w > 0.5).astype(float) * rng.integers(1, 3, n)  # in view where z says so
    screen_x = np.where(balls > 0, 0.5 + 0.1 * z[:, 0], np.nan)
    state = np.stack([z @ w + 0.1 * rng.standard_normal(n),  # linear in z
                      rng.standard_normal(n),                 # unrelated to z
                      np.full(n, 100.0),                       # constant
                      balls, screen_x], axis=1)
    names = ["player_y", "player_x", "health", "fireballs", "fireball_screen_x"]
    train = np.arange(n) < 3000
    inner = (np.arange(n) >= 2400) & train
    out = probes.probe(z, state, names, train, inner)
    assert out["player_y"]["score"] > 0.98
    assert out["player_x"]["score"] < 0.02
    assert "skipped" in out["health"]
    assert out["fireball_screen_x"]["score"] > 0.98
    assert out["fireball_screen_x"]["frames_test"] == int(((balls > 0) & ~train).sum())
    assert out["fireball_in_view"]["score"] > 0.97
    majority = (balls[train] > 0).mean() >= 0.5
    assert out["fireball_in_view"]["base"] == pytest.approx(np.mean((balls[~train] > 0) == majority))
    flat = probes.flat_scores(out)
    assert flat["probe_player_y"] == out["player_y"]["score"] and np.isnan(flat["probe_health"])


def test_the_touching_probe_ranks_hits_it_can_see_and_not_ones_it_cannot():
    """``fireball_touching`` (nearest fireball closer than TOUCHING, a rare class) is scored
    by average precision: near 1 when the distance is linear in z, near chance (the
    share of touching frames) when z says nothing of it."""
    from jepa_wm.envs.vizdoom import TOUCHING

    # positives ranked 1st and 3rd: precision 1/1 and 2/3
    assert probes.average_precision(np.array([True, False, True, False]),
                                     np.array([0.9, 0.5, 0.3, 0.1])) == pytest.approx(5 / 6)
    assert np.isnan(probes.average_precision(np.zeros(3, bool), np.arange(3.0)))
    rng = np.random.default_rng(0)
    n, d = 6000, 8
    z = rng.standard_normal((n, d))
    train = np.arange(n) < 4500
    inner = (np.arange(n) >= 3600) & train
    for dist, seen in ((200 + 60 * z[:, 1], True), (200 + 60 * rng.standard_normal(n), False)):
        state = np.stack([np.ones(n), dist], axis=1)  # a fireball in view on every frame
        out = probes.probe(z, state, ["fireballs", "fireball_dist"], train, inner)
        touch = out["fireball_touching"]
        assert touch["base"] == pytest.approx((dist[~train] < TOUCHING).mean())
        assert 0.002 < touch["base"] < 0.02  # rare, as in the game
        if seen:
            assert touch["score"] > 0.8, touch
        else:
            assert touch["score"] < 5 * touch["base"], touch
        assert probes.flat_scores(out)["probe_fireball_touching_base"] == touch["base"]


def test_the_death_probe_ranks_the_steps_that_end_in_a_death_when_z_shows_them():
    """``death_next`` (the store's terminated flag, one frame per lost episode) is scored
    by average precision on the held-out frames: high when a direction of z marks the
    last frame, near chance when none does; left out without ``terminated``."""
    rng = np.random.default_rng(1)
    n, d = 8000, 8
    z = rng.standard_normal((n, d))
    last = np.zeros(n, bool)
    last[rng.choice(n, 40, replace=False)] = True  # 0.5% of the frames, as in the game
    train = np.arange(n) < 6000
    inner = (np.arange(n) >= 4800) & train
    state = np.ones((n, 1))
    for shows, lo, hi in ((True, 0.8, 1.0), (False, 0.0, 0.05)):
        zz = z.copy()
        if shows:
            zz[last, 2] += 4.0
        out = probes.probe(zz, state, ["player_y"], train, inner, terminated=last)
        death = out["death_next"]
        assert death["metric"] == "average_precision"
        assert death["base"] == pytest.approx(last[~train].mean())
        assert lo < death["score"] < hi, death
    assert "death_next" not in probes.probe(z, state, ["player_y"], train, inner)


def _probe_cli(latents: Path, out: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "jepa_wm.cli", "probe", "--config",
                           "configs/experiments/smoke.yaml", "--latents", str(latents),
                           "--out", str(out), "--data", str(data)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_probe_stage_scores_held_out_episodes_through_the_cli(doom_store, tmp_path, capsys,
                                                             monkeypatch):
    """The real CLI: probes.json scores every target on the episodes V holds out (the
    split of vision_train.val_fraction and the seed); a second call does nothing."""
    from jepa_wm.data.datasets import split_episodes

    monkeypatch.chdir(ROOT)
    store = RolloutStore(doom_store)
    write_test_latents(store, tmp_path / "z", sigma=True)
    run = _probe_cli(tmp_path / "z", tmp_path / "probe", doom_store)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "probe" / "probes.json").read_text())
    _, test_eps = split_episodes(store, 0.1, 0)
    assert result["test_episodes"] == len(test_eps) == 1
    held = store.episode_lengths[test_eps].sum()
    state = store.get("state", slice(None))
    in_view = np.isin(store.episode_of(np.arange(store.num_frames)), test_eps) & (state[:, 3] > 0)
    t = result["targets"]
    assert t["player_y"]["frames_test"] == held
    assert t["fireball_screen_x"]["frames_test"] == in_view.sum()
    assert "base" in t["fireball_in_view"] and "fireball_touching" in t
    assert t["death_next"]["metric"] == "average_precision"  # scored, or why it was not
    assert "score" in t["death_next"] or "skipped" in t["death_next"]
    assert set(result["scores"]) == {f"probe_{k}" for k in t} | {
        f"probe_{k}_base" for k, p in t.items() if "base" in p}
    assert "probe: " in run.stdout and "R²" in run.stdout
    from jepa_wm import cli

    assert cli.main(["probe", "--config", "configs/experiments/smoke.yaml", "--latents",
                     str(tmp_path / "z"), "--out", str(tmp_path / "probe"), "--data",
                     str(doom_store)]) == 0  # the same command again, in process
    assert "nothing to do" in capsys.readouterr().out


def test_probe_stage_on_a_store_without_game_state_says_so_and_succeeds(tmp_path):
    """CartPole has no game state to record or replay: the probe stage says so, the run
    goes on."""
    from jepa_wm.data.collect import collect

    store = tmp_path / "cartpole"
    collect("CartPole-v1", store, episodes=3, seed=0, workers=1, image_size=32,
            progress=False)
    assert RolloutStore(store).state_names == ()
    write_test_latents(RolloutStore(store), tmp_path / "z", sigma=False)
    run = _probe_cli(tmp_path / "z", tmp_path / "probe", store)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "probe" / "probes.json").read_text())
    assert "records no game state" in result["skipped"] and "scores" not in result
    assert "no probes" in run.stdout


def _strip_state(src: Path, dst: Path) -> Path:
    """A copy of the store ``src`` as a store collected before game state was recorded."""
    import shutil

    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    del meta["state_names"]
    for shard in meta["shards"]:
        del shard["sha256"]["state.npy"]
        (dst / shard["name"] / "state.npy").unlink()
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


def test_replay_refuses_a_store_it_does_not_reproduce(doom_store, tmp_path):
    from jepa_wm.data.replay import add_game_state

    old = _strip_state(doom_store, tmp_path / "old")
    store = RolloutStore(old)
    e, t = 1, 5
    frames = np.load(old / "shard-00000" / "frames.npy", mmap_mode="r+")
    frames[store.episode_starts[e] + t] ^= 1  # one frame that the game never showed
    frames.flush()
    with pytest.raises(UserError, match=f"episode {e} .* at step {t} "):
        add_game_state(old, workers=1, progress=False)
    assert RolloutStore(old).state_names == ()  # no half state


def test_probe_stage_gives_an_old_vizdoom_store_the_state_it_would_have_recorded(
        doom_store, tmp_path):
    """The probe CLI on an old store (no state): it replays the store's actions from its
    seeds and gets exactly the state a collection with state recording stored, then probes;
    the store's identity for V, the latents and M does not change; a second replay does
    nothing."""
    from jepa_wm.data.replay import add_game_state
    from jepa_wm.io import hash_obj

    old = _strip_state(doom_store, tmp_path / "old")
    before = hash_obj(RolloutStore(old).content_meta)
    assert before == hash_obj(RolloutStore(old).meta) == hash_obj(
        RolloutStore(doom_store).content_meta)
    write_test_latents(RolloutStore(old), tmp_path / "z", sigma=False)
    run = _probe_cli(tmp_path / "z", tmp_path / "probe", old)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "replaying its 4 episodes" in run.stdout
    result = json.loads((tmp_path / "probe" / "probes.json").read_text())
    assert "probe_player_y" in result["scores"]
    got, want = RolloutStore(old), RolloutStore(doom_store)
    assert got.state_names == want.state_names
    np.testing.assert_array_equal(got.get("state", slice(None)), want.get("state", slice(None)))
    assert hash_obj(got.content_meta) == before
    got.verify()  # the new files' checksums are in meta.json
    assert not add_game_state(old, progress=False)
