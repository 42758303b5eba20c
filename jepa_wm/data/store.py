"""The rollout store: episodes of a real env on disk as sharded, memory-mapped ``.npy``.

Layout (format version 1)::

    STORE/meta.json                 env id, spaces, seed, policy, counts, per-shard sha256
    STORE/shard-00000/frames.npy        uint8   (n, 3, H, W)   obs_t
                     actions.npy        int64 (n,) for Discrete, float32 (n, *shape) for Box
                     rewards.npy        float32 (n,)            r_t of the step taken from obs_t
                     terminated.npy     bool    (n,)
                     truncated.npy      bool    (n,)
                     episode_starts.npy int64   (e,)            shard-local first frame of each episode
                     state.npy          float32 (n, S)          game state at obs_t (optional)

``state.npy`` is there when ``meta.json`` lists ``state_names`` (VizDoom stores collected
by this version: player position, health, fireballs in view; ``jepa_wm.envs.vizdoom``):
what the probes of a V's latent are fitted to. Stores without it read as before.

A shard is written into a temporary folder and renamed into place, then ``meta.json`` is
rewritten atomically; a shard folder that ``meta.json`` does not list is an interrupted
write and is removed when the store is opened for writing. Reading memory-maps the shards
(never the whole store in RAM).
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.lib import format as npformat

from jepa_wm.envs.actions import ActionSpace
from jepa_wm.io import UserError, new_memmap, read_json, sha256_file, write_json

FORMAT_VERSION = 1
META_FILE = "meta.json"
#: Per-frame arrays of a shard, in the order they are written and checked.
FRAME_ARRAYS = ("frames", "actions", "rewards", "terminated", "truncated")
ARRAYS = FRAME_ARRAYS + ("episode_starts",)
#: The optional per-frame game state (``meta.json`` ``state_names`` names its columns).
STATE = "state"
#: Shards whose memory maps a reader keeps open at once (each map holds a file descriptor).
MAX_OPEN_SHARDS = 16
#: meta.json keys that identify what a store holds: appending must not change them.
IDENTITY_KEYS = ("env_id", "image_size", "frame_skip", "max_episode_steps", "seed", "policy",
                 "episodes_per_shard", "env_kwargs", "action_space", "observation_space")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


# ---------------------------------------------------------------- spaces <-> JSON

def space_to_dict(space: gym.Space) -> dict:
    """A JSON-able description of a gymnasium space (rebuilt by ``space_from_dict``)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _compact(space.low), "high": _compact(space.high)}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    raise UserError(f"space {space}: cannot be stored; use Discrete, Box, MultiBinary or "
                    "MultiDiscrete")


def _compact(bound: np.ndarray):
    """A Box bound as one number when it is uniform (image spaces), else a nested list."""
    flat = bound.ravel()
    return flat[0].item() if flat.size and np.all(flat == flat[0]) else bound.tolist()


def space_from_dict(d: dict) -> gym.Space:
    """Inverse of ``space_to_dict``."""
    kind = d["type"]
    if kind == "Discrete":
        return gym.spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "Box":
        dtype = np.dtype(d["dtype"])
        shape = tuple(d["shape"])
        low = np.broadcast_to(np.array(d["low"], dtype=dtype), shape).copy()
        high = np.broadcast_to(np.array(d["high"], dtype=dtype), shape).copy()
        return gym.spaces.Box(low, high, shape, dtype)
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(d["n"])
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(d["nvec"])
    raise UserError(f"space type {kind!r}: unknown in meta.json")


def action_storage(space: gym.Space) -> tuple[tuple[int, ...], np.dtype]:
    """Per-frame shape and dtype of stored actions: int64 for discrete spaces, else float32."""
    if isinstance(space, gym.spaces.Discrete):
        return (), np.dtype(np.int64)
    if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return tuple(space.shape), np.dtype(np.int64)
    return tuple(space.shape), np.dtype(np.float32)


# ---------------------------------------------------------------- writing

class RolloutWriter:
    """Creates a store or reopens one for appending, one whole shard at a time.

    Args:
        root: The store folder.
        identity: What the store holds (``IDENTITY_KEYS``: env id, sizes, seed, policy,
            shard size, spaces as ``space_to_dict``). Reopening an existing store with a
            different identity is a ``UserError`` naming the first differing key: nothing
            already written is overwritten.
        state_names: The game-state values a new store records per frame (``STATE``). A
            store made without them is appended to without them; one made with other
            names is refused.
    """

    def __init__(self, root: str | Path, identity: dict[str, Any],
                 state_names: Sequence[str] = ()):
        self.root = Path(root)
        missing = [k for k in IDENTITY_KEYS if k not in identity]
        if missing:
            raise ValueError(f"RolloutWriter identity lacks {missing}")
        meta_path = self.root / META_FILE
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: is a file; give a folder for the store")
        if meta_path.exists():
            self.meta = read_json(meta_path)
            self._check_identity(identity)
        else:
            if self.root.exists() and any(p.name != "DONE.json" for p in self.root.iterdir()
                                          if not p.name.startswith(".")):
                raise UserError(f"{self.root}: exists, is not empty and has no {META_FILE}; "
                                "give an empty or new --out folder")
            self.meta = {"format_version": FORMAT_VERSION, **identity, "episodes": 0,
                         "frames": 0, "shards": []}
            if state_names:
                self.meta["state_names"] = list(state_names)
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(meta_path, self.meta)
        #: what this store records per frame besides FRAME_ARRAYS (its own, when it exists)
        self.state_names = tuple(self.meta.get("state_names", ()))
        if self.state_names and state_names and self.state_names != tuple(state_names):
            raise UserError(f"{self.root}: records game state {list(self.state_names)}, this "
                            f"env gives {list(state_names)}; use another --out folder")
        self._remove_unlisted()

    def _check_identity(self, identity: dict[str, Any]) -> None:
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.root}: store format version "
                            f"{self.meta.get('format_version')}; this jepa_wm reads "
                            f"{FORMAT_VERSION}")
        for key in IDENTITY_KEYS:
            if self.meta.get(key) != identity[key]:
                raise UserError(f"{self.root}: holds {key}={self.meta.get(key)!r}, asked for "
                                f"{identity[key]!r}; use another --out folder (an existing "
                                "store is never overwritten)")

    def _remove_unlisted(self) -> None:
        """Drop leftovers of an interrupted write: temp folders and unlisted shard folders."""
        listed = {s["name"] for s in self.meta["shards"]}
        for p in self.root.iterdir():
            if p.is_dir() and (p.name.startswith(".shard-") or
                               (p.name.startswith("shard-") and p.name not in listed)):
                shutil.rmtree(p)

    @property
    def num_episodes(self) -> int:
        return int(self.meta["episodes"])

    @property
    def num_frames(self) -> int:
        return int(self.meta["frames"])

    def write_shard(self, episodes: Sequence[dict[str, np.ndarray]]) -> None:
        """Append one shard holding ``episodes`` (each a dict of per-frame arrays ``frames``
        ``(T, 3, H, W)`` uint8, ``actions``, ``rewards``, ``terminated``, ``truncated``),
        atomically: temp folder, fsync, rename, then meta.json."""
        if not episodes:
            raise ValueError("write_shard needs at least one episode")
        index = len(self.meta["shards"])
        name = shard_name(index)
        lengths = np.array([len(ep["rewards"]) for ep in episodes], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        keys = FRAME_ARRAYS + ((STATE,) if self.state_names else ())
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            for key in keys:
                first = np.asarray(episodes[0][key])
                arr = new_memmap(tmp / f"{key}.npy", first.dtype,
                                 (int(lengths.sum()),) + first.shape[1:])
                for ep, s, n in zip(episodes, starts, lengths):
                    arr[s:s + n] = ep[key]
                arr.flush()
                del arr
            np.save(tmp / "episode_starts.npy", starts)
            sums = {f"{key}.npy": sha256_file(tmp / f"{key}.npy")
                    for key in keys + ("episode_starts",)}
            tmp.rename(self.root / name)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # name the shard, not its temp folder
                raise OSError(e.errno, e.strerror, str(self.root / name)) from e
            raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        self.meta["shards"].append({"name": name, "episodes": len(episodes),
                                    "frames": int(lengths.sum()), "sha256": sums})
        self.meta["episodes"] += len(episodes)
        self.meta["frames"] += int(lengths.sum())
        write_json(self.root / META_FILE, self.meta)


# ---------------------------------------------------------------- reading

class StoreReader:
    """What every frame-indexed store view derives from its ``get``, ``num_frames``,
    ``episode_starts``/``episode_ends`` and ``observation_space`` (``RolloutStore``, and
    ``jepa_wm.data.concat.ConcatStore`` reading several as one)."""

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts)

    def __len__(self) -> int:
        return self.num_frames

    @property
    def episode_lengths(self) -> np.ndarray:
        """``(E,)`` int64 frames per episode."""
        return self.episode_ends - self.episode_starts

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.observation_space.shape)

    def episode_of(self, idx: np.ndarray | int) -> np.ndarray:
        """Episode number of global frame indices."""
        return np.searchsorted(self.episode_starts, idx, side="right") - 1

    def frames(self, idx) -> np.ndarray:
        """uint8 ``(len(idx), 3, H, W)``."""
        return self.get("frames", idx)

    def actions(self, idx) -> np.ndarray:
        return self.get("actions", idx)

    def rewards(self, idx) -> np.ndarray:
        return self.get("rewards", idx)

    def terminated(self, idx) -> np.ndarray:
        return self.get("terminated", idx)

    def truncated(self, idx) -> np.ndarray:
        return self.get("truncated", idx)


class RolloutStore(StoreReader):
    """Read access to a store through memory maps; frames are indexed globally 0..N-1 in
    episode order.

    Opening checks that every listed shard file exists and has the shape ``meta.json``
    promises (a truncated or unreadable shard is a ``UserError`` naming it); ``verify()``
    also checks every byte against the stored sha256 (what ``jepa-wm inspect`` does).
    The object pickles without its open memory maps (safe for DataLoader workers).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / META_FILE).exists():
            raise UserError(f"{self.root}: not a rollout store (no {META_FILE}); run "
                            "`jepa-wm collect --out` first")
        self.meta = read_json(self.root / META_FILE)
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.root}: store format version "
                            f"{self.meta.get('format_version')}; this jepa_wm reads "
                            f"{FORMAT_VERSION}")
        shards = self.meta["shards"]
        #: names of the ``state`` array's columns (empty: the store records no game state)
        self.state_names = tuple(self.meta.get("state_names", ()))
        #: the per-frame arrays this store has (``get`` reads them)
        self.frame_arrays = FRAME_ARRAYS + ((STATE,) if self.state_names else ())
        self.shard_frames = np.array([s["frames"] for s in shards], dtype=np.int64)
        #: global index of each shard's first frame, plus the total at the end.
        self.shard_offsets = np.concatenate([[0], np.cumsum(self.shard_frames)]).astype(np.int64)
        self._maps: dict[int, dict[str, np.ndarray]] = {}
        starts = []
        for i, info in enumerate(shards):
            for key in self.frame_arrays + ("episode_starts",):
                self._check_file(i, key)
            folder = self.root / info["name"]
            starts.append(np.load(folder / "episode_starts.npy") + self.shard_offsets[i])
        #: global frame index of each episode's first frame, ``(E,)`` int64.
        self.episode_starts = (np.concatenate(starts) if starts else np.zeros(0, np.int64))
        #: one past each episode's last frame, ``(E,)`` int64.
        self.episode_ends = np.append(self.episode_starts[1:], self.num_frames).astype(np.int64)
        #: the env's actions (``jepa_wm.envs.actions.ActionSpace``)
        self.action_space = ActionSpace.of(self.meta["action_space"])
        self.observation_space = space_from_dict(self.meta["observation_space"])

    @property
    def content_meta(self) -> dict[str, Any]:
        """``meta.json`` without the game state (its ``state_names`` and ``state.npy``
        checksums): what V, the latents and everything after them depend on. A store whose
        state was added later (``jepa_wm.data.replay``) keeps its identity."""
        meta = {k: v for k, v in self.meta.items() if k != "state_names"}
        meta["shards"] = [{**s, "sha256": {f: h for f, h in s["sha256"].items()
                                           if f != f"{STATE}.npy"}} for s in self.meta["shards"]]
        return meta

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}

    # -- shards
    def _check_file(self, i: int, key: str) -> None:
        """Check shard ``i``'s ``key.npy`` exists, has a readable header with the row count
        meta.json promises, and is as long as that header says (not truncated)."""
        info = self.meta["shards"][i]
        path = self.root / info["name"] / f"{key}.npy"
        want = info["episodes"] if key == "episode_starts" else info["frames"]
        try:
            with open(path, "rb") as f:
                major, _ = npformat.read_magic(f)
                read_header = (npformat.read_array_header_1_0 if major == 1
                               else npformat.read_array_header_2_0)
                shape, _, dtype = read_header(f)
                data_start = f.tell()
        except FileNotFoundError:
            raise UserError(f"{path}: shard file missing; the store is incomplete, "
                            "recollect it into a new folder") from None
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{path}: corrupt shard header ({e}); recollect the store "
                            "into a new folder") from None
        if shape[:1] != (want,):
            raise UserError(f"{path}: holds {shape[:1]} rows, meta.json says {want}; "
                            "corrupt shard")
        size = data_start + int(np.prod(shape)) * dtype.itemsize
        if path.stat().st_size < size:
            raise UserError(f"{path}: truncated shard ({path.stat().st_size} of {size} "
                            "bytes); recollect the store into a new folder")

    def _open(self, i: int) -> dict[str, np.ndarray]:
        """Memory maps of shard ``i``'s per-frame arrays. At most ``MAX_OPEN_SHARDS`` stay
        open (each map holds a file descriptor), the least recently used closed first."""
        if i in self._maps:
            self._maps[i] = self._maps.pop(i)  # now the most recently used
            return self._maps[i]
        if len(self._maps) >= MAX_OPEN_SHARDS:
            self._maps.pop(next(iter(self._maps)))
        folder = self.root / self.meta["shards"][i]["name"]
        self._maps[i] = {key: np.load(folder / f"{key}.npy", mmap_mode="r")
                         for key in self.frame_arrays}
        return self._maps[i]

    def verify(self, progress: Callable[[int], None] | None = None) -> None:
        """Check every shard file's sha256 against meta.json; a mismatch is a one-line
        ``UserError`` naming the file. ``progress(i)`` is called after each shard."""
        for i, info in enumerate(self.meta["shards"]):
            for fname, expected in info["sha256"].items():
                path = self.root / info["name"] / fname
                if not path.exists():
                    raise UserError(f"{path}: shard file missing")
                got = sha256_file(path)
                if got != expected:
                    raise UserError(f"{path}: checksum mismatch (sha256 {got[:12]}..., "
                                    f"meta.json has {expected[:12]}...); the shard is corrupt")
            if progress is not None:
                progress(i)

    # -- sizes
    @property
    def num_frames(self) -> int:
        return int(self.shard_offsets[-1])

    # -- data
    def get(self, key: str, idx: Iterable[int] | np.ndarray | slice) -> np.ndarray:
        """Rows ``idx`` (global frame indices, any order, or a slice) of array ``key``
        (``frames``, ``actions``, ``rewards``, ``terminated``, ``truncated``, and ``state``
        when the store records it), read from the memory maps one shard at a time: only
        those rows are read."""
        if key == STATE and not self.state_names:
            raise UserError(f"{self.root}: records no game state (collected before game "
                            "state was recorded, or from an env without it); recollect it "
                            "into a new folder to have it")
        if key not in self.frame_arrays:
            raise KeyError(f"{key!r}: use one of {self.frame_arrays}")
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(self.num_frames))
        idx = np.asarray(idx, dtype=np.int64)
        flat = idx.ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= self.num_frames):
            raise IndexError(f"frame index out of range 0..{self.num_frames - 1}")
        shard = np.searchsorted(self.shard_offsets, flat, side="right") - 1
        proto = self._open(0)[key] if self.meta["shards"] else None
        out = np.empty((flat.size,) + (proto.shape[1:] if proto is not None else ()),
                       dtype=proto.dtype if proto is not None else np.uint8)
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            local = flat[sel] - self.shard_offsets[s]
            order = np.argsort(local, kind="stable")  # sorted reads are sequential on disk
            out[sel[order]] = self._open(int(s))[key][local[order]]
        return out.reshape(idx.shape + out.shape[1:])

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """All arrays of episode ``e`` (copies; one episode fits in RAM)."""
        sl = slice(int(self.episode_starts[e]), int(self.episode_ends[e]))
        return {key: self.get(key, sl) for key in self.frame_arrays}

    def episode_returns(self) -> np.ndarray:
        """``(E,)`` float64 sum of rewards per episode (reads only the reward arrays)."""
        if not self.num_frames:
            return np.zeros(0)
        rewards = np.concatenate([np.load(self.root / info["name"] / "rewards.npy")
                                  for info in self.meta["shards"]]).astype(np.float64)
        return np.add.reduceat(rewards, self.episode_starts)

    def summary(self) -> dict[str, Any]:
        """Counts and per-episode statistics (what ``inspect`` and ``collect`` print)."""
        lengths, returns = self.episode_lengths, self.episode_returns()
        nbytes = sum(f.stat().st_size for f in self.root.glob("shard-*/*.npy"))

        def stats(x):
            return (float(np.mean(x)), float(np.std(x))) if len(x) else (float("nan"),) * 2

        return {"path": str(self.root), "env_id": self.meta["env_id"], "episodes": self.num_episodes,
                "frames": self.num_frames, "shards": len(self.shard_frames),
                "image_shape": list(self.image_shape),
                "action_space": str(self.action_space.space), "seed": self.meta["seed"],
                "policy": self.meta["policy"],
                "return_mean": stats(returns)[0], "return_std": stats(returns)[1],
                "length_mean": stats(lengths)[0], "length_std": stats(lengths)[1],
                "length_min": int(lengths.min()) if len(lengths) else 0,
                "length_max": int(lengths.max()) if len(lengths) else 0,
                "state_names": list(self.state_names), "bytes": int(nbytes),
                "bytes_per_frame": nbytes / self.num_frames if self.num_frames else float("nan")}
