"""Several rollout stores (and their latent sets) read as one, for M's training data: the
random-policy store plus the stores the trained controller collected (iterative training).
Nothing is copied: every read goes to the member's memory maps.

Frame and episode numbers run through the members in order (member 0's first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jepa_wm.data.latents import LatentSet
from jepa_wm.data.store import StoreReader
from jepa_wm.io import UserError


def _split(offsets: np.ndarray, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flat idx, member of each, local index)`` for global indices ``idx``."""
    flat = np.asarray(idx, dtype=np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= offsets[-1]):
        raise IndexError(f"index out of range 0..{offsets[-1] - 1}")
    member = np.searchsorted(offsets, flat, side="right") - 1
    return flat, member, flat - offsets[member]


def _gather(parts: Sequence, offsets: np.ndarray, idx, read) -> np.ndarray:
    """``read(part, local_idx)`` from each member, put back in the order of ``idx``."""
    shape = np.shape(idx)
    flat, member, local = _split(offsets, idx)
    out = None
    for m in np.unique(member):
        sel = np.nonzero(member == m)[0]
        rows = np.asarray(read(parts[int(m)], local[sel]))
        if out is None:
            out = np.empty((flat.size,) + rows.shape[1:], rows.dtype)
        out[sel] = rows
    if out is None:  # no index at all
        out = np.asarray(read(parts[0], local[:0]))
    return out.reshape(shape + out.shape[1:])


class ConcatStore(StoreReader):
    """``RolloutStore`` members read as one store (same env, image size and action space).

    Has what M's datasets and the fidelity figures read: ``num_frames``,
    ``episode_starts``/``episode_ends``, ``action_space``, ``get``, and what
    ``StoreReader`` derives from them (episode lengths, the per-array readers).
    """

    def __init__(self, stores: Sequence):
        if not stores:
            raise UserError("no stores to concatenate")
        first = stores[0]
        for s in stores[1:]:
            if (s.meta["env_id"], s.image_shape, s.action_space) != (
                    first.meta["env_id"], first.image_shape, first.action_space):
                raise UserError(f"{s.root}: env {s.meta['env_id']}, frames {s.image_shape}, "
                                f"actions {s.action_space} differ from {first.root}'s; only "
                                "stores of one env and action space can be read as one")
        self.stores = list(stores)
        self.root = first.root
        self.meta = first.meta
        self.action_space = first.action_space
        self.observation_space = first.observation_space
        self.offsets = np.cumsum([0] + [s.num_frames for s in stores])
        self.episode_offsets = np.cumsum([0] + [s.num_episodes for s in stores])
        self.episode_starts = np.concatenate(
            [s.episode_starts + o for s, o in zip(stores, self.offsets)])
        self.episode_ends = np.concatenate(
            [s.episode_ends + o for s, o in zip(stores, self.offsets)])
        names = [tuple(s.state_names) for s in stores]
        self.state_names = list(names[0]) if len(set(names)) == 1 else []

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1])

    def episodes_of(self, member: int) -> np.ndarray:
        """The (global) episode numbers of member ``member``."""
        return np.arange(self.episode_offsets[member], self.episode_offsets[member + 1])

    def get(self, key: str, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(self.num_frames))
        return _gather(self.stores, self.offsets, idx, lambda s, i: s.get(key, i))


class _Rows:
    """Index-only view of one array of every member (``z`` or ``sigma``)."""

    def __init__(self, arrays: Sequence, offsets: np.ndarray):
        self.arrays, self.offsets = list(arrays), offsets
        self.shape = (int(offsets[-1]),) + tuple(arrays[0].shape[1:])
        self.dtype = arrays[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        return _gather(self.arrays, self.offsets, idx, lambda a, i: a[i])


class ConcatLatents:
    """``LatentSet`` members (one per store of a ``ConcatStore``, all made by one V) read
    as one set. ``mean``/``std`` are member 0's: M keeps the standardisation it was first
    fitted with."""

    def __init__(self, sets: Sequence):
        if not sets:
            raise UserError("no latent sets to concatenate")
        first = sets[0]
        for s in sets[1:]:
            if s.vision_sha256 != first.vision_sha256 or s.latent_dim != first.latent_dim:
                raise UserError(f"{s.path}: made by another V than {first.path}; encode "
                                "every store with the same vision checkpoint")
            if (s.sigma is None) != (first.sigma is None):
                raise UserError(f"{s.path}: has {'no ' if s.sigma is None else ''}posterior "
                                f"sigma, unlike {first.path}")
        self.sets = list(sets)
        self.offsets = np.cumsum([0] + [len(s.z) for s in sets])
        self.z = _Rows([s.z for s in sets], self.offsets)
        self.sigma = None if first.sigma is None else _Rows([s.sigma for s in sets],
                                                            self.offsets)
        self.path, self.meta = first.path, first.meta
        self.latent_dim, self.vision_sha256 = first.latent_dim, first.vision_sha256
        self.mean, self.std = first.mean, first.std
        self.frames = int(self.offsets[-1])

    sample = LatentSet.sample  # reads only ``z`` and ``sigma``, which this class has too
