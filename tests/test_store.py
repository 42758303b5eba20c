"""The rollout store and its Dataset views: round trip, episode boundaries, corruption."""

from __future__ import annotations

import pickle
import shutil

import gymnasium as gym
import numpy as np
import pytest

import jepa_wm.data.store as store_module
from jepa_wm.data.datasets import FrameDataset, FramePairDataset, WindowDataset, split_episodes
from jepa_wm.data.store import RolloutStore, RolloutWriter, space_from_dict, space_to_dict
from jepa_wm.io import UserError

BOX = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.ones(3, np.float32), (3,), np.float32)


def _identity(**over):
    ident = {"env_id": "Synthetic-v0", "image_size": 8, "frame_skip": 1,
             "max_episode_steps": None, "seed": 3, "policy": "test", "episodes_per_shard": 2,
             "env_kwargs": {}, "action_space": space_to_dict(BOX),
             "observation_space": space_to_dict(gym.spaces.Box(0, 255, (3, 8, 8), np.uint8))}
    return {**ident, **over}


def _episode(rng, length):
    term = np.zeros(length, bool)
    term[-1] = True
    return {"frames": rng.integers(0, 256, (length, 3, 8, 8), dtype=np.uint8),
            "actions": rng.uniform(0, 1, (length, 3)).astype(np.float32),
            "rewards": rng.normal(size=length).astype(np.float32),
            "terminated": term, "truncated": np.zeros(length, bool)}


def test_round_trip_across_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_OPEN_SHARDS", 2)  # reads evict open shards
    rng = np.random.default_rng(0)
    episodes = [_episode(rng, n) for n in (5, 1, 7, 3, 4)]
    writer = RolloutWriter(tmp_path / "s", _identity())
    writer.write_shard(episodes[:2])
    writer.write_shard(episodes[2:4])
    RolloutWriter(tmp_path / "s", _identity()).write_shard(episodes[4:])  # reopen, append
    store = RolloutStore(tmp_path / "s")
    assert (store.num_episodes, store.num_frames) == (5, 20)
    assert store.meta["episodes"] == 5 and len(store.meta["shards"]) == 3
    np.testing.assert_array_equal(store.episode_starts, [0, 5, 6, 13, 16])
    np.testing.assert_array_equal(store.episode_lengths, [5, 1, 7, 3, 4])
    assert store.action_space == BOX and store.image_shape == (3, 8, 8)
    full = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}
    idx = np.array([19, 0, 6, 5, 12, 13, 6])  # any order, across shards, repeats
    for key, arr in full.items():
        np.testing.assert_array_equal(store.get(key, idx), arr[idx])
    np.testing.assert_array_equal(store.frames(slice(4, 9)), full["frames"][4:9])
    np.testing.assert_array_equal(store.episode(2)["actions"], episodes[2]["actions"])
    np.testing.assert_allclose(store.episode_returns(),
                               [e["rewards"].astype(np.float64).sum() for e in episodes])
    assert store.episode_of(np.array([0, 4, 5, 6, 19])).tolist() == [0, 0, 1, 2, 4]
    clone = pickle.loads(pickle.dumps(store))  # DataLoader workers get a copy
    np.testing.assert_array_equal(clone.frames(idx), full["frames"][idx])
    assert len(store._maps) <= 2
    store.verify()


def test_spaces_round_trip():
    for space in (gym.spaces.Discrete(3), gym.spaces.Discrete(4, start=1), BOX,
                  gym.spaces.Box(0, 255, (3, 64, 64), np.uint8), gym.spaces.MultiBinary(4),
                  gym.spaces.MultiDiscrete([2, 5])):
        assert space_from_dict(space_to_dict(space)) == space


def test_writer_refuses_other_identity_and_cleans_interrupted_shards(tmp_path):
    rng = np.random.default_rng(1)
    writer = RolloutWriter(tmp_path / "s", _identity())
    writer.write_shard([_episode(rng, 3)])
    with pytest.raises(UserError, match="seed=3, asked for 4"):
        RolloutWriter(tmp_path / "s", _identity(seed=4))
    # a kill between the shard rename and the meta.json update leaves an unlisted shard
    shutil.copytree(tmp_path / "s" / "shard-00000", tmp_path / "s" / "shard-00001")
    (tmp_path / "s" / ".shard-00002.abc").mkdir()
    RolloutWriter(tmp_path / "s", _identity())
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["meta.json", "shard-00000"]
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        RolloutWriter(tmp_path / "t", _identity())


def test_doom_store_contents(doom_store):
    store = RolloutStore(doom_store)
    assert store.meta["env_id"] == "VizdoomTakeCover-v1" and store.num_episodes == 4
    assert store.action_space == gym.spaces.Discrete(3)
    assert store.frames(np.arange(3)).shape == (3, 3, 64, 64)
    assert store.actions(np.arange(3)).dtype == np.int64
    np.testing.assert_array_equal(store.rewards(slice(None)), 1.0)  # +1 per tic survived
    ends = store.episode_ends - 1
    done = store.terminated(slice(None)) | store.truncated(slice(None))
    assert done[ends].all() and done.sum() == store.num_episodes  # one end per episode
    np.testing.assert_allclose(store.episode_returns(), store.episode_lengths)


def test_windows_never_cross_episodes(doom_store):
    store = RolloutStore(doom_store)
    # a source holding each frame's own index + 1 shows exactly which frames a window read
    source = (np.arange(store.num_frames, dtype=np.float32) + 1)[:, None]
    ds = WindowDataset(store, seq_len=16, source=source, stride=5)
    lengths = store.episode_lengths
    assert len(ds) == sum(len(range(0, n - 1, 5)) for n in lengths)
    for i in range(len(ds)):
        item = ds[i]
        mask = item["mask"].numpy()
        frame = item["z"][:, 0].numpy() - 1
        valid = frame[mask].astype(np.int64)
        n_valid = int(mask.sum())
        assert n_valid >= 2 and mask[:n_valid].all()  # a prefix with >= 1 transition
        assert len(set(store.episode_of(valid))) == 1  # one episode only
        np.testing.assert_array_equal(np.diff(valid), 1)  # consecutive frames
        for key in ("z", "a", "r", "done"):
            assert not item[key][~item["mask"]].any()  # zeros past the end
        last = valid[-1]
        assert item["done"][mask].numpy()[-1] == store.terminated(np.array([last]))[0]
    obs_item = WindowDataset(store, seq_len=4)[0]
    assert obs_item["obs"].shape == (5, 3, 64, 64) and obs_item["a"].shape == (5, 3)
    np.testing.assert_array_equal(obs_item["obs"].numpy(), store.frames(np.arange(5)))


def test_one_step_windows_hold_the_death_step_only_with_tail(doom_store):
    """A one-transition window starts at most on an episode's second-to-last frame, so the
    step that ends an episode (its last frame's flag) never sits at a window's first
    position; ``tail`` adds a window on each last frame (alone, the rest masked), where a
    head on that frame reads the death. A JEPA with task heads trains on those."""
    from jepa_wm.vision import JEPAModule
    from jepa_wm.vision.train import make_datasets

    store = RolloutStore(doom_store)
    died = store.terminated(slice(None)).astype(bool)
    assert died.any()
    plain = WindowDataset(store, seq_len=1, stride=1)
    assert not any(died[plain.starts])  # the bug this guards against
    tail = WindowDataset(store, seq_len=1, stride=1, tail=True)
    assert len(tail) == len(plain) + store.num_episodes
    last = np.flatnonzero(tail.starts == tail.ends - 1)
    assert len(last) == store.num_episodes
    item = tail[int(last[0])]
    assert item["mask"].tolist() == [True, False]
    assert item["done"][0] == died[tail.starts[last[0]]]
    assert sum(bool(tail[int(i)]["done"][0]) for i in last) == died.sum()

    class Train:
        max_frames, val_fraction = None, 0.2

    task = JEPAModule(latent_dim=8, action_dim=3, task_weight=1.0, predictor_hidden=16)
    other = JEPAModule(latent_dim=8, action_dim=3, predictor_hidden=16)
    assert make_datasets(task, store, Train, 0)[0].starts.size > \
        make_datasets(other, store, Train, 0)[0].starts.size


def test_frame_views(doom_store):
    store = RolloutStore(doom_store)
    pairs = FramePairDataset(store)
    assert len(pairs) == store.num_frames - store.num_episodes
    last_of_first = int(store.episode_ends[0]) - 1
    for i in (0, last_of_first - 1, last_of_first, len(pairs) - 1):
        item, t = pairs[i], int(pairs.index[i])
        assert store.episode_of(t) == store.episode_of(t + 1)
        np.testing.assert_array_equal(item["next_obs"].numpy(), store.frames(np.array([t + 1]))[0])
        assert item["a"].argmax().item() == store.actions(np.array([t]))[0]
    train, val = split_episodes(store, 0.25, seed=0)
    assert len(val) == 1 and sorted(np.concatenate([train, val]).tolist()) == [0, 1, 2, 3]
    frames = FrameDataset(store, episodes=val)
    assert len(frames) == store.episode_lengths[val[0]]
    np.testing.assert_array_equal(frames[0]["obs"].numpy(),
                                  store.frames(store.episode_starts[val])[0])


@pytest.mark.faults
def test_truncated_or_corrupt_shard_is_named(doom_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(doom_store, copy)
    frames = copy / "shard-00001" / "frames.npy"
    with open(frames, "r+b") as f:
        f.truncate(frames.stat().st_size // 2)
    with pytest.raises(UserError, match="shard-00001/frames.npy.*truncated"):
        RolloutStore(copy)
    shutil.rmtree(copy)
    shutil.copytree(doom_store, copy)
    (copy / "shard-00000" / "rewards.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="shard-00000/rewards.npy"):
        RolloutStore(copy)
    with pytest.raises(UserError, match="not a rollout store"):
        RolloutStore(tmp_path / "nothing")
