"""Game state for a store collected without it: replay every episode's stored actions from
its seed in the same env, read the state at each frame, and add it to the store.

Collection is deterministic (episode ``i`` is reset with ``episode_seed(seed, i)``), so a
replay of the stored actions passes through the stored frames; every replayed frame is
checked against the stored one, and a store the replay does not reproduce is refused (one
line naming the episode and step) rather than given a state that belongs to other frames.

The state is written shard by shard (``state.npy`` through a temporary name, then its
checksum into ``meta.json``); ``meta.json``'s ``state_names`` comes last, so a killed
replay resumes at the first shard without a state and a reader never sees half of one.
The frames, and so every V, latent set and M made from the store, are untouched: their
identity leaves the game state out (``RolloutStore.content_meta``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from jepa_wm.data.store import META_FILE, STATE, RolloutStore
from jepa_wm.io import UserError, read_json, sha256_file, write_json


def _env(meta: dict):
    from jepa_wm.envs import make_env

    return make_env(meta["env_id"], meta["image_size"], meta["frame_skip"],
                    meta["max_episode_steps"], game_state=True, **meta["env_kwargs"])


def replay_shard(root: str, shard: int) -> np.ndarray:
    """The game state ``(frames, S)`` of every frame of shard ``shard``, by replay."""
    from jepa_wm.data.collect import episode_seed

    store = RolloutStore(root)
    first = int(np.searchsorted(store.episode_starts, store.shard_offsets[shard]))
    last = int(np.searchsorted(store.episode_starts, store.shard_offsets[shard + 1]))
    env = _env(store.meta)
    rows = []
    try:
        for e in range(first, last):
            ep = store.episode(e)
            obs, info = env.reset(seed=episode_seed(store.meta["seed"], e))
            for t, action in enumerate(ep["actions"]):
                if not np.array_equal(obs, ep["frames"][t]):
                    raise UserError(f"{root}: replaying episode {e} from its seed gives "
                                    f"another frame at step {t} than the stored one; this "
                                    "store cannot get its game state by replay (collected "
                                    "by another VizDoom version?); recollect it")
                rows.append(info["state"])
                obs, _, _, _, info = env.step(action)
    finally:
        env.close()
    return np.asarray(rows, np.float32)


def add_game_state(root: str | os.PathLike, workers: int = 2,
                   progress: bool = True) -> bool:
    """Give the store at ``root`` its game state (``state.npy`` per shard, ``state_names``
    in meta.json) by replay. Returns False when it already has one. Resumable."""
    from jepa_wm.envs import state_names
    from jepa_wm.envs.vizdoom import reap_engines

    root = Path(root)
    store = RolloutStore(root)
    if store.state_names:
        return False
    probe = _env(store.meta)
    names = state_names(probe)
    probe.close()
    if not names:
        raise UserError(f"{root}: env {store.meta['env_id']} reports no game state; only "
                        "VizDoom stores can get one")
    todo = [i for i, s in enumerate(store.meta["shards"])
            if f"{STATE}.npy" not in s["sha256"]]
    start = time.perf_counter()
    import multiprocessing

    n = max(1, min(workers, len(todo) or 1))
    with reap_engines(), ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("spawn")) as pool:
        for i, state in zip(todo, pool.map(replay_shard, [str(root)] * len(todo), todo)):
            info = store.meta["shards"][i]
            if len(state) != info["frames"]:
                raise UserError(f"{root}: shard {info['name']}: replay gave {len(state)} "
                                f"frames, the shard holds {info['frames']}")
            path = root / info["name"] / f"{STATE}.npy"
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, state)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            meta = read_json(root / META_FILE)
            meta["shards"][i]["sha256"][path.name] = sha256_file(path)
            write_json(root / META_FILE, meta)
            store.meta = meta
            if progress:
                print(f"game state: {info['name']} ({info['episodes']} episodes) replayed "
                      f"and checked, {time.perf_counter() - start:.0f} s", flush=True)
    meta = read_json(root / META_FILE)
    meta["state_names"] = list(names)
    write_json(root / META_FILE, meta)
    return True
