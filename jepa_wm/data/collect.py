"""Collect episodes of a real env into a rollout store, in parallel and reproducibly.

Episode ``i`` of a store always gets the env seed and the policy randomness derived from
``(seed, i)``, and episodes are written in index order into shards of a fixed episode
count. So the bytes on disk depend only on the arguments: not on timing, not on the number
of workers, and not on whether the run was killed and resumed (complete shards are kept,
the rest is collected again).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jepa_wm.config import MAX_HOLD
from jepa_wm.data.store import RolloutStore, RolloutWriter, action_storage, space_to_dict
from jepa_wm.envs import default_step_limit, make_env, state_names
from jepa_wm.envs.vector import make_vector_env
from jepa_wm.envs.vizdoom import reap_engines
from jepa_wm.io import UserError

#: Separates the policy's random stream from the env's seed stream of the same episode.
_POLICY_STREAM = 1


def episode_seed(seed: int, episode: int) -> int:
    """The env reset seed of episode ``episode`` of a store collected with ``seed``."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


class Policy(Protocol):
    """What ``collect`` drives. ``name`` is recorded in meta.json (and must match when a
    store is appended to). Calls, in order::

        policy.reset(num_envs)               once, before anything else
        policy.start_episode(slot, episode)  env slot ``slot`` begins global episode
                                             ``episode`` (seed material for a random policy,
                                             "clear this slot's RNN state" for a controller)
        policy.act(obs) -> actions           obs uint8 (num_envs, 3, H, W) -> actions
                                             (num_envs, ...) in the env's action space;
                                             rows of idle slots are ignored

    For byte-identical stores, a slot's actions must depend only on its episode number and
    its own observations.
    """

    name: str

    def reset(self, num_envs: int) -> None: ...

    def start_episode(self, slot: int, episode: int) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...


def random_action(space: gym.Space, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random action of ``space``: Discrete, MultiDiscrete, MultiBinary, or
    Box (uniform in bounds; N(0, 1) where unbounded)."""
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(space.start + rng.integers(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (space.start + rng.integers(space.nvec)).astype(np.int64)
    if isinstance(space, gym.spaces.MultiBinary):
        return rng.integers(0, 2, space.shape).astype(np.int64)
    bounded = np.isfinite(space.low) & np.isfinite(space.high)
    low, high = np.where(bounded, space.low, 0.0), np.where(bounded, space.high, 1.0)
    return np.where(bounded, rng.uniform(low, high), rng.normal(size=space.shape)
                    ).astype(np.float32)


class HoldRandomPolicy:
    """The paper's data policy: a uniformly random action, held for a random number of
    steps (uniform in ``1..max_hold``), then a new one. Works for Discrete, Box (uniform
    in bounds; N(0, 1) where unbounded), MultiBinary and MultiDiscrete spaces.

    Args:
        action_space: The env's (single) action space.
        seed: Store seed; episode ``e`` draws from ``default_rng([seed, e, 1])``.
        max_hold: Longest hold, in agent steps. The default 10 is Ha & Schmidhuber's Doom
            data (``repeat = randint(1, 11)``): it puts the states a controller that holds
            an action reaches (walls, corners) into M's data, which shorter holds miss.
            VizDoom take-cover episode lengths (seed 0, 200 episodes): max_hold 10
            340 +- 189 (min 107, max 1172); 3: 274 +- 135; 2: 252 +- 118; 1: 233 +- 99
            (the paper's random policy: 210 +- 108). On the 50 evaluation seeds of seed 0:
            max_hold 10 313 +- 173, max_hold 1 219 +- 85.
    """

    def __init__(self, action_space: gym.Space, seed: int = 0, max_hold: int = MAX_HOLD):
        self.space, self.seed, self.max_hold = action_space, seed, max_hold
        self.name = f"hold_random(max_hold={max_hold})"
        self.shape, self.dtype = action_storage(action_space)

    def reset(self, num_envs: int) -> None:
        # placeholders: start_episode gives each slot its episode's stream before use.
        self.rngs = [np.random.default_rng(i) for i in range(num_envs)]
        self.current = np.zeros((num_envs,) + self.shape, self.dtype)
        self.left = np.zeros(num_envs, np.int64)

    def start_episode(self, slot: int, episode: int) -> None:
        self.rngs[slot] = np.random.default_rng([self.seed, episode, _POLICY_STREAM])
        self.left[slot] = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        for i, rng in enumerate(self.rngs):
            if self.left[i] == 0:
                self.current[i] = random_action(self.space, rng)
                self.left[i] = rng.integers(1, self.max_hold + 1)
            self.left[i] -= 1
        return self.current.copy()


class _Episode:
    """Per-step buffers of one running episode."""

    def __init__(self, index: int):
        self.index = index
        self.frames, self.actions, self.rewards, self.terminated, self.truncated = \
            [], [], [], [], []
        self.states: list[np.ndarray] = []

    def arrays(self, action_dtype: np.dtype) -> dict[str, np.ndarray]:
        out = {"frames": np.stack(self.frames),
               "actions": np.asarray(self.actions, dtype=action_dtype),
               "rewards": np.asarray(self.rewards, dtype=np.float32),
               "terminated": np.asarray(self.terminated, dtype=bool),
               "truncated": np.asarray(self.truncated, dtype=bool)}
        if self.states:
            out["state"] = np.stack(self.states).astype(np.float32)
        return out


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("episodes  {task.fields[frames]:,} frames  "
                               "{task.fields[fps]:,.0f} frames/s"),
                    TimeElapsedColumn(), console=console)


def collect(env_id: str, out: str | Path, episodes: int, seed: int = 0, workers: int = 2,
            image_size: int = 64, frame_skip: int = 1, max_episode_steps: int | None = None,
            policy: Policy | None = None, max_hold: int = MAX_HOLD,
            episodes_per_shard: int = 32,
            env_kwargs: dict[str, Any] | None = None, progress: bool = True,
            console: Console | None = None) -> dict[str, Any]:
    """Fill the store at ``out`` up to ``episodes`` episodes; returns its summary.

    Args:
        env_id: Gymnasium id (see ``jepa_wm.envs.make_env``).
        out: Store folder; created, resumed, or appended to (same identity only).
        episodes: Total episodes the store must hold.
        seed: Store seed (episode ``i`` is seeded from ``(seed, i)``).
        workers: Parallel envs (worker processes watched for death; in-process for 1).
        image_size, frame_skip, max_episode_steps: As ``make_env`` (None step limit =
            the env's own, 2100 for VizdoomTakeCover-v1).
        policy: A ``Policy``; default ``HoldRandomPolicy(action_space, seed, max_hold)``.
        max_hold: Longest hold of the default random policy (ignored with ``policy``).
        episodes_per_shard: Episodes per shard file set (fixed, so resumed stores match).
        env_kwargs: Extra ``gym.make`` keyword arguments (recorded in meta.json).
        progress: Show a progress bar and print the closing summary.

    Returns: the store's ``summary()`` plus ``collected`` (episodes added now),
    ``collected_frames``, ``wall_time`` (s) and ``frames_per_s`` of this call.
    """
    if episodes < 1:
        raise UserError(f"episodes {episodes}: must be 1 or more")
    if workers < 1:
        raise UserError(f"workers {workers}: must be 1 or more")
    if episodes_per_shard < 1:
        raise UserError(f"episodes_per_shard {episodes_per_shard}: must be 1 or more")
    console = console or Console(stderr=True)
    env_kwargs = dict(env_kwargs or {})
    limit = default_step_limit(env_id, max_episode_steps)
    probe = make_env(env_id, image_size, frame_skip, limit, game_state=True, **env_kwargs)
    action_space, obs_space = probe.action_space, probe.observation_space
    names = state_names(probe)
    probe.close()
    if max_hold < 1:
        raise UserError(f"max_hold {max_hold}: must be 1 or more")
    policy = policy or HoldRandomPolicy(action_space, seed, max_hold)
    writer = RolloutWriter(out, {
        "env_id": env_id, "image_size": image_size, "frame_skip": frame_skip,
        "max_episode_steps": limit, "seed": seed, "policy": policy.name,
        "episodes_per_shard": episodes_per_shard, "env_kwargs": env_kwargs,
        "action_space": space_to_dict(action_space),
        "observation_space": space_to_dict(obs_space)}, state_names=names)
    have = writer.num_episodes
    if have > episodes:
        raise UserError(f"{out}: already holds {have} episodes, more than the {episodes} "
                        "asked; ask for at least as many or use another --out folder")
    start = time.perf_counter()
    frames = 0
    if have < episodes:
        with reap_engines():
            frames = _run(writer, env_id, range(have, episodes), seed, workers, image_size,
                          frame_skip, limit, env_kwargs, policy, episodes_per_shard,
                          len(writer.state_names),
                          action_storage(action_space)[1], console if progress else None)
    wall = time.perf_counter() - start
    summary = {**RolloutStore(out).summary(), "collected": episodes - have,
               "collected_frames": frames, "wall_time": wall,
               "frames_per_s": frames / wall if wall > 0 else 0.0}
    if progress:
        print_summary(summary)  # on stdout; the progress bar went to ``console`` (stderr)
    return summary


def _run(writer: RolloutWriter, env_id: str, todo: range, seed: int, workers: int,
         image_size: int, frame_skip: int, limit: int | None, env_kwargs: dict,
         policy: Policy, per_shard: int, n_state: int, action_dtype: np.dtype,
         console: Console | None) -> int:
    """Collect episodes ``todo`` (in index order) and write them shard by shard, with
    ``n_state`` game-state values per frame (0: none); returns the number of frames
    collected."""
    n = min(workers, len(todo))
    # autoreset off: every episode is reset by hand with its own seed.
    envs = make_vector_env(partial(make_env, env_id, image_size, frame_skip, limit,
                                   game_state=n_state > 0, **env_kwargs), n)
    queue = iter(todo)
    # shard boundaries continue from the store's end in steps of per_shard.
    bounds = list(range(todo.start, todo.stop, per_shard)) + [todo.stop]
    next_shard, finished = 0, {}
    running: list[_Episode | None] = [None] * n
    frames, t0 = 0, time.perf_counter()
    bar = _progress(console) if console is not None else None
    task = bar.add_task("collect", total=len(todo), frames=0, fps=0.0) if bar else None
    try:
        if bar:
            bar.start()
        policy.reset(n)
        state = np.full((n, n_state), np.nan, np.float32)  # the game state of ``obs``
        obs = _start(envs, policy, running, np.ones(n, bool), queue, seed, state)
        while next_shard < len(bounds) - 1:
            actions = policy.act(obs)
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            ended = np.zeros(n, bool)
            for i, ep in enumerate(running):
                ended[i] = terminated[i] or truncated[i]
                if ep is None:
                    continue
                ep.frames.append(obs[i])
                ep.actions.append(actions[i])
                ep.rewards.append(rewards[i])
                ep.terminated.append(terminated[i])
                ep.truncated.append(truncated[i])
                if n_state:
                    ep.states.append(state[i].copy())
                frames += 1
                if ended[i]:
                    finished[ep.index] = ep.arrays(action_dtype)
                    running[i] = None
            _update_state(state, info)
            if ended.any():
                # write every shard whose episodes are all finished, in order
                while next_shard < len(bounds) - 1 and all(
                        e in finished for e in range(bounds[next_shard], bounds[next_shard + 1])):
                    ids = range(bounds[next_shard], bounds[next_shard + 1])
                    writer.write_shard([finished.pop(e) for e in ids])
                    next_shard += 1
                next_obs = _start(envs, policy, running, ended, queue, seed, state)
                if bar:
                    fps = frames / max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, completed=writer.num_episodes - todo.start
                               + len(finished), frames=frames, fps=fps)
            obs = next_obs
    finally:
        if bar:
            bar.stop()
        envs.close()
    return frames


def _update_state(state: np.ndarray, info: dict) -> None:
    """Copy the game state the envs reported in ``info`` into the rows of ``state`` it
    has (a reset reports only the slots it reset)."""
    if state.shape[1] and "state" in info:
        has = info.get("_state", np.ones(len(state), bool))
        state[has] = info["state"][has]


def _start(envs, policy: Policy, running: list, mask: np.ndarray, queue, seed: int,
           state: np.ndarray):
    """Reset the slots in ``mask``, giving each the next episode of ``queue`` (its own
    seed) or, when none is left, an idle reset whose steps are thrown away; their game
    state goes into ``state``."""
    seeds: list[int | None] = [None] * len(running)
    for i in np.nonzero(mask)[0]:
        index = next(queue, None)
        if index is not None:
            running[i] = _Episode(index)
            seeds[i] = episode_seed(seed, index)
            policy.start_episode(int(i), index)
    obs, info = envs.reset(seed=seeds, options={"reset_mask": mask.copy()})
    _update_state(state, info)
    return obs


def print_summary(s: dict[str, Any], console: Console | None = None) -> None:
    """The closing summary of ``collect`` (also used by ``inspect``)."""
    console = console or Console()
    lines = [f"store        {s.get('path', '')}".rstrip(),
             (f"env          {s['env_id']}  actions {s['action_space']}  frames "
              f"{'x'.join(map(str, s['image_shape']))} uint8"),
             (f"episodes     {s['episodes']:,} in {s['shards']} shards  ({s['frames']:,} "
              f"frames, {s['bytes'] / 1e6:,.1f} MB, {s['bytes_per_frame']:,.0f} bytes/frame)"),
             f"return       {s['return_mean']:.1f} ± {s['return_std']:.1f}",
             (f"length       {s['length_mean']:.1f} ± {s['length_std']:.1f}  "
              f"(min {s['length_min']}, max {s['length_max']})")]
    if s.get("state_names"):
        lines.append(f"game state   {', '.join(s['state_names'])} per frame")
    if "collected" in s:
        lines.append(f"this run     {s['collected']:,} episodes, {s['collected_frames']:,} "
                     f"frames in {s['wall_time']:.1f} s ({s['frames_per_s']:,.0f} frames/s)")
    console.print("\n".join(lines), highlight=False)
