"""make_env on the real envs (VizDoom take-cover, CarRacing-v3, a state-only env) and the
action helpers."""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch

from jepa_wm.envs import ActionSpace, make_env, resize_area
from jepa_wm.io import UserError


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        frames.append(obs)
    return np.stack(frames)


def test_doom_pixels_actions_and_limit():
    env = make_env("VizdoomTakeCover-v1")
    try:
        assert env.action_space == gym.spaces.Discrete(3)  # 0 no-op, 1 MOVE_RIGHT, 2 MOVE_LEFT
        assert env.observation_space.shape == (3, 64, 64)
        obs, _ = env.reset(seed=1)
        assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8
        assert obs.std() > 0  # a real picture, not a blank buffer
        _, reward, terminated, truncated, _ = env.step(1)
        assert reward == 1.0 and not terminated and not truncated  # +1 per tic survived
        assert env._max_episode_steps == 2100  # the paper's limit by default
    finally:
        env.close()


def test_doom_same_seed_same_frames_and_step_limit():
    env = make_env("VizdoomTakeCover-v1", image_size=32, max_episode_steps=6)
    try:
        actions = [0, 1, 1, 2, 0, 2]
        a, b = _rollout(env, 7, actions[:4]), _rollout(env, 7, actions[:4])
        assert a.shape == (5, 3, 32, 32)
        np.testing.assert_array_equal(a, b)
        env.reset(seed=7)
        flags = [env.step(x)[3] for x in actions]
        assert flags == [False] * 5 + [True]  # truncated exactly at the limit
    finally:
        env.close()


def test_frame_skip_sums_rewards():
    env = make_env("VizdoomTakeCover-v1", frame_skip=4)
    try:
        env.reset(seed=0)
        assert env.step(0)[1] == 4.0
    finally:
        env.close()


def test_carracing_box_actions():
    env = make_env("CarRacing-v3", image_size=64, max_episode_steps=3)
    try:
        assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (3,)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8
        truncated = [env.step(np.array([0.0, 0.5, 0.0], np.float32))[3] for _ in range(3)]
        assert truncated == [False, False, True]
    finally:
        env.close()


def test_state_only_env_renders_pixels():
    env = make_env("CartPole-v1", image_size=48)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (3, 48, 48) and obs.dtype == np.uint8
        assert env.action_space == gym.spaces.Discrete(2)
        assert obs.std() > 0
    finally:
        env.close()


class _NoPixels(gym.Env):
    """A state-only env with no rgb rendering."""

    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)
    metadata: ClassVar[dict] = {"render_modes": []}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, False, False, {}


def test_bad_env_ids():
    with pytest.raises(UserError, match="NoSuchEnv-v0"):
        make_env("NoSuchEnv-v0")
    gym.register("JepaWmNoPixels-v0", entry_point=_NoPixels)
    try:
        with pytest.raises(UserError, match="JepaWmNoPixels-v0.*not images"):
            make_env("JepaWmNoPixels-v0")
    finally:
        gym.registry.pop("JepaWmNoPixels-v0")
    with pytest.raises(UserError, match="frame_skip"):
        make_env("CartPole-v1", frame_skip=0)


def test_resize_is_area_average():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)
    out = resize_area(img, 64)
    assert out.shape == (3, 64, 64)
    # 128 -> 64 rows is a 2-pixel average; 96 -> 64 columns a 1.5-pixel area average:
    # a constant image stays constant, and the mean brightness is kept.
    assert np.all(resize_area(np.full((120, 160, 3), 77, np.uint8), 64) == 77)
    assert abs(out.mean() - img.mean()) < 0.5
    square = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    blocks = square.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    assert np.abs(resize_area(square, 64) - blocks).max() <= 1.0
    gray = resize_area(rng.integers(0, 256, (96, 96), dtype=np.uint8), 32)
    assert gray.shape == (3, 32, 32) and np.all(gray[0] == gray[2])


def test_action_vectors():
    disc = ActionSpace(gym.spaces.Discrete(3))
    a = np.array([[0, 2], [1, 1]])
    v = disc.vector(a)
    assert v.shape == (2, 2, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(v[0, 1], [0, 0, 1])
    vt = disc.vector(torch.tensor([2, 0]))
    assert isinstance(vt, torch.Tensor) and vt.dtype == torch.float32
    assert vt.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert torch.equal(disc.vector(vt), vt)  # vectors pass through
    np.testing.assert_array_equal(disc.env_action(v), a)
    box = ActionSpace(gym.spaces.Box(-1, 1, (3,), np.float32))
    b = np.array([[0.5, -2.0, 0.1]], np.float32)
    assert box.vector(b).shape == (1, 3) and box.dim == 3
    np.testing.assert_allclose(box.env_action(b), [[0.5, -1.0, 0.1]])
    assert disc.dim == 3 and ActionSpace(gym.spaces.MultiDiscrete([2, 3])).dim == 5
    with pytest.raises(UserError, match="linear controller acts on Discrete or 1-D Box"):
        ActionSpace(gym.spaces.MultiBinary(4)).check_controller()


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Discrete(4, start=1),
                                   gym.spaces.Box(-1, 1, (2,), np.float32),
                                   gym.spaces.MultiBinary(3), gym.spaces.MultiDiscrete([2, 3])])
def test_one_action_description_round_trips_through_json(space):
    """The form the store's meta.json, M's checkpoint and C's best.npz carry rebuilds the
    env's own space; spaces no pipeline part can use are refused in one line."""
    import json

    a = ActionSpace(space)
    back = ActionSpace.of(json.loads(json.dumps(a.to_dict())))
    assert back == a and back.space == space and back == space
    with pytest.raises(UserError, match="not supported"):
        ActionSpace.of(gym.spaces.Text(5))


def test_checkpoints_older_than_one_description_still_load():
    old_discrete, old_box = {"type": "discrete", "n": 3}, {"type": "box", "low": [-1.0, 0.0],
                                                           "high": [1.0, 4.0]}
    assert ActionSpace.of(old_discrete) == gym.spaces.Discrete(3)
    box = ActionSpace.of(old_box).space
    assert box.shape == (2,) and box.low.tolist() == [-1, 0] and box.high.tolist() == [1, 4]
