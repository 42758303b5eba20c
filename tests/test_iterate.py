"""Iterative training's parts on the real env: a trained C as collect's data policy (V, M
and C in the loop; deterministic however the episodes are spread over workers), and
several stores with their latents read as one for M."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from jepa_wm.controller import ControllerFile
from jepa_wm.data import RolloutStore
from jepa_wm.data.concat import ConcatLatents, ConcatStore
from jepa_wm.envs import ActionSpace
from jepa_wm.io import UserError
from jepa_wm.memory import MDNRNNModule
from jepa_wm.nets.controller import controller_input_dim, num_params
from tests.conftest import write_test_latents

torch.set_num_threads(1)
DISCRETE = ActionSpace(gym.spaces.Discrete(3))


def parts(seed: int = 0):
    """A frozen random V (z 8), a small untrained M and a random C that uses both."""
    from jepa_wm.vision import RandomModule

    torch.manual_seed(seed)
    vision = RandomModule(latent_dim=8).eval()
    memory = MDNRNNModule(latent_dim=8, action=DISCRETE.to_dict(), hidden_size=16,
                          num_mixtures=2).eval()
    dim = controller_input_dim(8, 16, False)
    params = np.random.default_rng(seed).normal(0, 1, num_params(dim, DISCRETE))
    return vision, memory, ControllerFile(params.astype(np.float32), 8, 16, False, DISCRETE)


def collect_with_c(out, epsilon: float, workers: int, episodes: int = 3):
    from jepa_wm.controller.policy import ControllerPolicy
    from jepa_wm.data.collect import collect

    vision, memory, controller = parts()
    policy = ControllerPolicy(vision, memory, controller, seed=5, epsilon=epsilon)
    collect("VizdoomTakeCover-v1", out, episodes=episodes, seed=5, workers=workers,
            policy=policy, episodes_per_shard=2, progress=False)
    return RolloutStore(out), (vision, memory, controller)


def test_controller_policy_plays_c_and_is_the_same_over_any_workers(tmp_path):
    from jepa_wm.controller.policy import ControllerPolicy

    one, (vision, memory, controller) = collect_with_c(tmp_path / "w1", 0.0, workers=1)
    two, _ = collect_with_c(tmp_path / "w2", 0.0, workers=2)
    assert one.meta["policy"].startswith("controller(") and "epsilon=0.0" in one.meta["policy"]
    for key in ("frames", "actions", "terminated"):
        assert np.array_equal(one.get(key, slice(None)), two.get(key, slice(None))), key
    # the stored actions are C's, given the stored frames (replayed through a fresh policy)
    replay = ControllerPolicy(vision, memory, controller, seed=5, epsilon=0.0)
    replay.reset(1)
    for e in range(one.num_episodes):
        replay.start_episode(0, e)
        ep = one.episode(e)
        acts = [int(replay.act(f[None])[0]) for f in ep["frames"]]
        assert acts == ep["actions"].tolist()


def test_epsilon_mixes_in_random_holds(tmp_path):
    pure, _ = collect_with_c(tmp_path / "pure", 0.0, workers=1, episodes=2)
    mixed, _ = collect_with_c(tmp_path / "mixed", 0.3, workers=1, episodes=2)
    a, b = pure.episode(0)["actions"], mixed.episode(0)["actions"]
    n = min(len(a), len(b))
    assert not np.array_equal(a[:n], b[:n])  # random holds changed the play


def test_concat_store_and_latents_read_as_one(doom_store, tmp_path):
    a = RolloutStore(doom_store)
    za = write_test_latents(a, tmp_path / "za", sigma=True, seed=0)
    zb = write_test_latents(a, tmp_path / "zb", sigma=True, seed=1)
    store, latents = ConcatStore([a, a]), ConcatLatents([za, zb])
    n = a.num_frames
    assert store.num_frames == 2 * n == len(latents.z)
    assert store.num_episodes == 2 * a.num_episodes
    assert store.episodes_of(1).tolist() == list(range(a.num_episodes, 2 * a.num_episodes))
    assert np.array_equal(store.episode_lengths, np.tile(a.episode_lengths, 2))
    idx = np.array([[n + 3, 2], [0, 2 * n - 1]])  # any order, across members, any shape
    assert np.array_equal(store.actions(idx), a.actions(idx % n))
    assert np.array_equal(store.frames(idx[0]), a.frames(idx[0] % n))
    got = latents.z[idx.ravel()]
    want = np.stack([zb.z[3], za.z[2], za.z[0], zb.z[n - 1]])
    assert np.array_equal(got, want)
    s = latents.sample(np.arange(2 * n), np.random.default_rng(0))
    assert s.shape == (2 * n, 4) and not np.array_equal(s[:n], za.z[:])
    # M's chunk stream gives every step of every member's episodes, once, in order
    from jepa_wm.data.datasets import EpisodeChunks

    det = ConcatLatents([write_test_latents(a, tmp_path / "da", sigma=False, seed=0),
                         write_test_latents(a, tmp_path / "db", sigma=False, seed=1)])
    steps = []
    for batch in EpisodeChunks(store, det, 64, 1, shuffle=False):
        m = batch["mask"][0]
        steps.append(batch["z"][0][m][:-1 if m.all() else None].numpy())
    assert np.array_equal(np.concatenate(steps), det.z[np.arange(2 * n)])


def test_concat_refuses_latents_of_another_v(doom_store, tmp_path):
    from jepa_wm.data.latents import LatentSet, write_latents

    a = RolloutStore(doom_store)
    za = write_test_latents(a, tmp_path / "za", sigma=False)
    write_latents(tmp_path / "zb", a.num_frames, 4, [np.zeros((a.num_frames, 4), np.float32)],
                  meta={"vision_sha256": "another", "store": str(a.root)})
    with pytest.raises(UserError, match="another V"):
        ConcatLatents([za, LatentSet(tmp_path / "zb")])


def test_a_round_trains_m_further_at_iterate_memory_lr(tmp_path):
    """Adam restarts every round: at ``iterate.memory_lr`` when set, else at M's own rate;
    a rate that is not > 0 is refused naming the key."""
    from jepa_wm.config import IterateConfig
    from jepa_wm.iterate import check_config, round_memory
    from jepa_wm.memory import save_memory

    _, memory, _ = parts()
    save_memory(memory, tmp_path / "m.ckpt")
    for memory_lr, lr in ((None, memory.hparams.lr), (1e-4, 1e-4)):
        module = round_memory(tmp_path / "m.ckpt", IterateConfig(memory_lr=memory_lr))
        assert module.training
        assert module.configure_optimizers().param_groups[0]["lr"] == lr
    with pytest.raises(UserError, match=r"iterate\.memory_lr: 0\.0; accepted"):
        check_config(IterateConfig(rounds=1, memory_lr=0.0))
