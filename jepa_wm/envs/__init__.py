"""Real pixel environments: any gymnasium id as uint8 ``(3, H, W)`` frames.

``make_env`` gets the pixels from an image observation (VizDoom's ``screen``, CarRacing's
96x96 frame) or, for state-only envs, from ``render()``; resizes them with area
interpolation; repeats actions for ``frame_skip`` steps; and adds a step limit (the World
Models paper's 2100 for VizDoom take-cover). The action space is the env's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from jepa_wm.envs.actions import ActionSpace
from jepa_wm.io import UserError

#: Step limits used when the caller leaves ``max_episode_steps`` None (Ha & Schmidhuber 2018).
DEFAULT_STEP_LIMITS = {"VizdoomTakeCover-v1": 2100}

#: Dict observation keys that hold the picture (VizDoom: ``screen``).
IMAGE_KEYS = ("screen", "pixels", "image", "rgb")


def default_step_limit(env_id: str, max_episode_steps: int | None = None) -> int | None:
    """The step limit ``make_env`` applies: the caller's, else the paper's for this env."""
    if max_episode_steps is not None:
        return max_episode_steps
    return DEFAULT_STEP_LIMITS.get(env_id)


def _is_image_space(space: gym.Space) -> bool:
    """uint8 Box of shape (H, W), (H, W, 1) or (H, W, 3)."""
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8
            and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[2] in (1, 3))))


def _image_getter(space: gym.Space) -> Callable[[Any], np.ndarray] | None:
    """A function picking the (H, W[, C]) uint8 picture out of an observation, or None."""
    if _is_image_space(space):
        return lambda obs: obs
    if isinstance(space, gym.spaces.Dict):
        for key in IMAGE_KEYS:
            if key in space.spaces and _is_image_space(space.spaces[key]):
                return lambda obs, key=key: obs[key]
    return None


def resize_area(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 -> (3, size, size) uint8, area-averaged.

    PIL's BOX filter averages each output pixel's footprint (fractional edges weighted),
    which is area interpolation; it is ~70 us for 160x120 -> 64x64 and needs no torch in
    the env worker processes.
    """
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BOX))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


class PixelObservation(gym.Wrapper):
    """Replace the observation with uint8 ``(3, size, size)`` pixels.

    Pixels come from the observation itself (``from_render=False``) or from
    ``env.render()`` after every reset and step (state-only envs made with
    ``render_mode="rgb_array"``).
    """

    def __init__(self, env: gym.Env, size: int, from_render: bool = False):
        super().__init__(env)
        self.size = size
        self.from_render = from_render
        self._get = None if from_render else _image_getter(env.observation_space)
        self.observation_space = gym.spaces.Box(0, 255, (3, size, size), np.uint8)

    def _pixels(self, obs: Any) -> np.ndarray:
        img = self.env.render() if self.from_render else self._get(obs)
        return resize_area(np.asarray(img, dtype=np.uint8), self.size)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._pixels(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._pixels(obs), reward, terminated, truncated, info


class FrameSkip(gym.Wrapper):
    """Repeat each action ``skip`` times (stopping at an episode end); rewards are summed."""

    def __init__(self, env: gym.Env, skip: int):
        super().__init__(env)
        self.skip = skip

    def step(self, action):
        total = 0.0
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def _gym_make(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` with gymnasium's lookup errors turned into one-line UserErrors."""
    if env_id.startswith("Vizdoom"):
        import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom* ids)
    try:
        return gym.make(env_id, **kwargs)
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound,
            gym.error.VersionNotFound, gym.error.DeprecatedEnv) as e:
        raise UserError(f"env {env_id!r}: not a registered gymnasium id ({e}); use e.g. "
                        "VizdoomTakeCover-v1 or CarRacing-v3") from None
    except gym.error.Error as e:
        raise UserError(f"env {env_id!r}: cannot be made ({e})") from None


def make_env(env_id: str, image_size: int = 64, frame_skip: int = 1,
             max_episode_steps: int | None = None, game_state: bool = False,
             **kwargs: Any) -> gym.Env:
    """A gymnasium env whose observations are uint8 ``(3, image_size, image_size)``.

    Args:
        env_id: A registered gymnasium id (``Vizdoom*`` ids are registered on demand).
        image_size: Frames are resized to ``image_size`` x ``image_size`` (area interpolation).
        frame_skip: Env steps per agent action (rewards summed).
        max_episode_steps: Step limit in agent steps; None = the env's own, or 2100 for
            VizdoomTakeCover-v1 (the paper's limit).
        game_state: VizDoom only: put the game state (``jepa_wm.envs.vizdoom.STATE_NAMES``:
            player position, health, fireballs in view) into ``info["state"]`` after every
            reset and step (what ``collect`` stores for the probes); ``state_names(env)``
            names it. Other envs have none.
        **kwargs: Passed to ``gym.make`` (for VizDoom: DoomGame config keys).

    The action space is the env's own (VizdoomTakeCover-v1: ``Discrete(3)`` =
    0 no-op, 1 MOVE_RIGHT, 2 MOVE_LEFT; CarRacing-v3: ``Box(3)`` steer, gas, brake).
    """
    if image_size < 8:
        raise UserError(f"image_size {image_size}: too small; use 8 or more (64 as the paper)")
    if frame_skip < 1:
        raise UserError(f"frame_skip {frame_skip}: must be 1 or more")
    limit = default_step_limit(env_id, max_episode_steps)
    if limit is not None and limit < 1:
        raise UserError(f"max_episode_steps {limit}: must be 1 or more (or None)")
    if env_id.startswith("Vizdoom"):
        import vizdoom

        # the smallest resolution VizDoom renders; no window (the wrapper's default).
        kwargs.setdefault("screen_resolution", vizdoom.ScreenResolution.RES_160X120)
    if limit is not None:
        # replace the registered limit (counted in raw steps) by ours, applied outside.
        kwargs["max_episode_steps"] = limit * frame_skip
    env = _gym_make(env_id, **kwargs)
    if env_id.startswith("Vizdoom"):
        # the engine's ./_vizdoom/ and ./_vizdoom.ini go to a private folder of the cache,
        # not the user's folder, and two engines never race on one (envs/vizdoom.py)
        from jepa_wm.envs.vizdoom import GameState, VizdoomEngine

        env = VizdoomEngine(env)
        if game_state:
            env = GameState(env)
    if _image_getter(env.observation_space) is not None:
        env = PixelObservation(env, image_size)
    elif "rgb_array" in (env.metadata.get("render_modes") or []):
        env.close()
        env = PixelObservation(_gym_make(env_id, render_mode="rgb_array", **kwargs),
                               image_size, from_render=True)
    else:
        space = env.observation_space
        env.close()
        raise UserError(f"env {env_id!r}: observations {space} are not images and it has "
                        "no rgb_array render mode; use an env with pixels")
    if frame_skip > 1:
        env = FrameSkip(env, frame_skip)
    if limit is not None:
        env = gym.wrappers.TimeLimit(env, limit)
    return env


@dataclass(frozen=True)
class EnvSettings:
    """The env a config names, as every stage plays it (the config's top-level ``env``,
    ``image_size``, ``frame_skip`` and ``max_episode_steps``): what the real loop, the
    hold measurements and the benchmarks take instead of the whole config."""

    env: str
    image_size: int = 64
    frame_skip: int = 1
    max_episode_steps: int | None = None

    @classmethod
    def of(cls, cfg: Any) -> EnvSettings:
        """The settings of a resolved config."""
        return cls(cfg.env, cfg.image_size, cfg.frame_skip, cfg.max_episode_steps)

    def factory(self, **kwargs: Any) -> Callable[[], gym.Env]:
        """A no-argument ``make_env`` of these settings (for vector envs); ``kwargs`` as
        ``make_env``'s."""
        return partial(make_env, self.env, image_size=self.image_size,
                       frame_skip=self.frame_skip, max_episode_steps=self.max_episode_steps,
                       **kwargs)


def state_names(env: gym.Env) -> tuple[str, ...]:
    """The names of the values ``env`` puts in ``info["state"]`` (empty: it has none)."""
    try:
        return tuple(env.get_wrapper_attr("state_names"))
    except AttributeError:
        return ()


__all__ = [
    "DEFAULT_STEP_LIMITS",
    "ActionSpace",
    "FrameSkip",
    "PixelObservation",
    "default_step_limit",
    "make_env",
    "resize_area",
    "state_names",
]
