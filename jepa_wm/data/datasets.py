"""torch Dataset views of a rollout store: frames and frame pairs for V, windows for M.

All views index the store's memory maps on demand (nothing is preloaded) and can be
restricted to a subset of episodes (``split_episodes`` makes a train/validation split).
``EpisodeChunks`` serves M: whole episodes in chunks, for training with the state carried.
Actions come out as float vectors (``ActionSpace.vector``: one-hot for
Discrete), the form the nets consume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from jepa_wm.data.store import RolloutStore
from jepa_wm.io import UserError


def split_episodes(store: RolloutStore, val_fraction: float,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Episode numbers ``(train, val)``: a random ``val_fraction`` of the episodes (at
    least one when ``val_fraction > 0`` and there are two or more episodes) held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction {val_fraction}: must be in [0, 1)")
    n = store.num_episodes
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _episodes(store: RolloutStore, episodes: Sequence[int] | None) -> np.ndarray:
    if episodes is None:
        return np.arange(store.num_episodes)
    episodes = np.asarray(episodes, dtype=np.int64)
    if episodes.size and (episodes.min() < 0 or episodes.max() >= store.num_episodes):
        raise IndexError(f"episode numbers must be in 0..{store.num_episodes - 1}")
    return episodes


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for each pair."""
    if not len(starts):
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]).astype(np.int64)


class FrameDataset(Dataset):
    """Single frames: ``{"obs": uint8 (3, H, W)}``.

    Args:
        store: A ``RolloutStore``.
        episodes: Episode numbers to use (None = all).
    """

    def __init__(self, store: RolloutStore, episodes: Sequence[int] | None = None):
        self.store = store
        eps = _episodes(store, episodes)
        #: global frame index of each item.
        self.index = _ranges(store.episode_starts[eps], store.episode_ends[eps])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """The items ``indices`` (what ``__getitem__`` gives) from one read of the memory
        maps: the DataLoader calls this once per batch, instead of one store read per item."""
        frames = torch.from_numpy(self.store.frames(self.index[np.asarray(indices, np.int64)]))
        return [{"obs": f} for f in frames]


class FramePairDataset(Dataset):
    """Consecutive frames of one episode (for JEPA): ``{"obs": uint8 (3, H, W), "a":
    float32 (action_dim,), "next_obs": uint8 (3, H, W)}`` where ``a`` is the action taken
    from ``obs`` and ``next_obs`` the frame it led to. The last frame of an episode has no
    stored successor, so it is never an ``obs`` here.

    Args:
        store: A ``RolloutStore``.
        episodes: Episode numbers to use (None = all).
    """

    def __init__(self, store: RolloutStore, episodes: Sequence[int] | None = None):
        self.store = store
        eps = _episodes(store, episodes)
        self.index = _ranges(store.episode_starts[eps], store.episode_ends[eps] - 1)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """The items ``indices`` from one read of the memory maps (see ``FrameDataset``)."""
        t = self.index[np.asarray(indices, np.int64)]
        frames = torch.from_numpy(self.store.frames(np.stack([t, t + 1], axis=1)))
        a = torch.from_numpy(self.store.action_space.vector(self.store.actions(t)))
        return [{"obs": f[0], "a": ai, "next_obs": f[1]} for f, ai in zip(frames, a)]


class WindowDataset(Dataset):
    """Fixed-length windows of one episode (for M and sequence models).

    Each item holds ``seq_len + 1`` time-aligned steps starting at a window start ``t``:

    - ``obs`` uint8 ``(L, 3, H, W)`` — or, when ``source`` is given, ``z`` float32
      ``(L, D)`` taken from ``source`` (e.g. the latents of every stored frame);
    - ``a`` float32 ``(L, action_dim)``: the action taken from step ``t + k``;
    - ``r`` float32 ``(L,)``: its reward; ``done`` float32 ``(L,)``: 1 where that step
      ended the episode by termination (a time-limit truncation is not a death);
    - ``mask`` bool ``(L,)``: False past the episode's end, where every field is zero.

    So a model predicts step ``k + 1`` from steps ``<= k`` with inputs ``[:-1]`` and
    targets ``[1:]``. A window never mixes two episodes. Windows start at every
    ``stride``-th frame of an episode that leaves at least one transition.

    Args:
        store: A ``RolloutStore``.
        seq_len: Transitions per window (the window holds ``seq_len + 1`` steps).
        source: Optional ``(N_frames, D)`` array aligned with the store's frame index
            (e.g. ``np.load("latents/z.npy", mmap_mode="r")``); replaces ``obs`` by ``z``.
        stride: Frames between window starts (None = ``seq_len``: windows tile each
            episode, the last one masked past its end).
        episodes: Episode numbers to use (None = all).
        tail: Windows also start on an episode's last frame (no transition, everything
            after it masked): the step that ends an episode then appears at a window's
            first position, where a head on that frame reads its reward and death (a JEPA
            with task heads: without it a one-step window never holds a death).
    """

    def __init__(self, store: RolloutStore, seq_len: int, source: np.ndarray | None = None,
                 stride: int | None = None, episodes: Sequence[int] | None = None,
                 tail: bool = False):
        if seq_len < 1:
            raise UserError(f"seq_len {seq_len}: must be 1 or more")
        stride = seq_len if stride is None else stride
        if stride < 1:
            raise UserError(f"stride {stride}: must be 1 or more")
        if source is not None and (source.ndim != 2 or len(source) != store.num_frames):
            raise UserError(f"source of shape {tuple(source.shape)}: must be (N_frames, D) "
                            f"with N_frames = {store.num_frames}, the store's frame count")
        self.store, self.seq_len, self.source = store, seq_len, source
        eps = _episodes(store, episodes)
        starts, ends = [], []
        for s, e in zip(store.episode_starts[eps], store.episode_ends[eps]):
            first = np.arange(s, e if tail else e - 1, stride)  # >= 1 transition each,
            # or (tail) also the episode's last frame alone
            starts.append(first)
            ends.append(np.full(len(first), e))
        self.starts = np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, int)
        #: end (exclusive) of the episode each window belongs to.
        self.ends = np.concatenate(ends).astype(np.int64) if ends else np.zeros(0, int)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start, end = int(self.starts[i]), int(self.ends[i])
        idx = start + np.arange(self.seq_len + 1)
        mask = idx < end
        idx = np.minimum(idx, end - 1)  # read within the episode, then zero the padding
        if self.source is None:
            key, x = "obs", self.store.frames(idx)
        else:
            key, x = "z", np.asarray(self.source[idx], dtype=np.float32)
        a = self.store.action_space.vector(self.store.actions(idx))
        r = self.store.rewards(idx).astype(np.float32)
        done = self.store.terminated(idx).astype(np.float32)
        for arr in (x, a, r, done):
            arr[~mask] = 0
        return {key: torch.from_numpy(x), "a": torch.from_numpy(a), "r": torch.from_numpy(r),
                "done": torch.from_numpy(done), "mask": torch.from_numpy(mask)}


class EpisodeChunks(IterableDataset):
    """Whole episodes for M, cut into chunks of ``seq_len`` steps with the LSTM state
    carried from chunk to chunk (truncated BPTT), the way the dream uses M: every episode
    is seen from a zero state at its first frame to its last step.

    Each item is one batch of ``batch_size`` lanes. A lane plays one episode after another
    (episodes shuffled per epoch); each batch gives each lane its next ``seq_len + 1``
    steps (the last step overlaps the next chunk's first, as the targets of ``[:-1]`` are
    ``[1:]``):

    - ``z`` float32 ``(B, L, D)``: latents; for a set with a posterior (``sigma.npy``),
      ``mu + sigma * eps`` drawn afresh for every batch;
    - ``a`` float32 ``(B, L, A)``, ``r`` ``(B, L)``, ``done`` ``(B, L)`` (termination, not
      the time limit), ``mask`` bool ``(B, L)``: as ``WindowDataset``;
    - ``reset`` bool ``(B,)``: the chunk starts an episode (the lane's state is zeroed);
      lanes with no episode left in the epoch are all-masked with ``reset`` True.

    With ``pack`` a lane whose episode ends inside a chunk goes straight on with its next
    episode instead of padding the rest of the chunk, and the batch also holds ``start``
    bool ``(B, L)``: the step begins an episode (M zeroes that lane's state there, and the
    step before it has no next-z target). Episode i of the epoch's order goes to the lane
    with the fewest frames so far (the lowest-numbered on a tie): the lane that runs out
    first. Every frame is a step exactly once either way.

    Args:
        store: A ``RolloutStore``.
        latents: A ``LatentSet`` aligned with ``store``.
        seq_len: Steps per chunk (the gradient horizon; the state horizon is the episode).
        batch_size: Lanes per batch.
        episodes: Episode numbers to use (None = all).
        shuffle: Shuffle the episode order each epoch (off for validation).
        seed: Seed of the episode order (epoch ``k`` uses ``(seed, k)``) and the z noise
            (batch ``p`` of epoch ``k`` uses ``(seed, k, p)``).
        total: Training steps: iterate the steps ``start .. total - 1`` across epochs
            (``steps`` counts those of whole epochs); None = one data epoch per iteration.
        start: The step to start from (a resumed training's restored step).
        pack: Episodes back to back in each lane (above).
    """

    def __init__(self, store: RolloutStore, latents, seq_len: int, batch_size: int,
                 episodes: Sequence[int] | None = None, shuffle: bool = True, seed: int = 0,
                 total: int | None = None, start: int = 0, pack: bool = False):
        if seq_len < 1 or batch_size < 1:
            raise UserError(f"seq_len {seq_len}, batch_size {batch_size}: must be >= 1")
        if len(latents.z) != store.num_frames:
            raise UserError(f"{latents.path}: {len(latents.z)} latents for a store of "
                            f"{store.num_frames} frames; encode again")
        self.store, self.latents = store, latents
        self.seq_len, self.batch_size = seq_len, batch_size
        self.episodes = _episodes(store, episodes)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.total, self.start, self.pack = total, start, pack
        self._chunks = np.ceil(store.episode_lengths / seq_len).astype(int)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.episodes
        return np.random.default_rng([self.seed, epoch]).permutation(self.episodes)

    def epoch_length(self, epoch: int) -> int:
        """Batches in data epoch ``epoch`` (lanes take episodes greedily in its order, so
        it lasts as long as the busiest lane)."""
        if self.pack:
            return self._packed_batches(self._lanes(epoch))
        return _lane_batches(self._chunks[self._order(epoch)], self.batch_size)

    def _packed_batches(self, lanes: list[tuple[np.ndarray, np.ndarray]]) -> int:
        """Batches until the longest packed lane is used up."""
        return -(-max((len(stream) for stream, _ in lanes), default=0) // self.seq_len)

    def _lanes(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``pack``: each lane's frame indices in epoch ``epoch`` (its episodes back to back)
        and where its episodes begin (bool, same length)."""
        import heapq

        order = self._order(epoch)
        starts, ends = self.store.episode_starts, self.store.episode_ends
        heap = [(0, b) for b in range(min(self.batch_size, len(order)))]
        lanes: list[list[int]] = [[] for _ in heap]
        for e in order:
            load, b = heapq.heappop(heap)
            lanes[b].append(int(e))
            heapq.heappush(heap, (load + int(ends[e] - starts[e]), b))
        out = []
        for eps in lanes:
            lengths = ends[eps] - starts[eps]
            first = np.zeros(int(lengths.sum()), bool)
            first[np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)] = True
            out.append((np.concatenate([np.arange(starts[e], ends[e]) for e in eps]), first))
        return out

    def steps(self, max_epochs: int) -> int:
        """Training steps in ``max_epochs`` data epochs."""
        return sum(self.epoch_length(e) for e in range(max_epochs))

    def __len__(self) -> int:
        return self.total if self.total is not None else self.epoch_length(self.epoch)

    def __iter__(self):
        """Without ``total``: one data epoch, the next one each time when shuffled; an
        unshuffled (validation) stream gives epoch 0 every time, noise included, so every
        validation scores the same held-out sample and a resumed run's curve is an
        uninterrupted one's. With ``total``: training steps ``start .. total - 1``, epoch
        after epoch; step g is the same batch, noise included, whatever step the stream
        starts from (exact resume)."""
        if self.total is None:
            if self.shuffle:
                self.epoch += 1
            yield from self._epoch(self.epoch - 1 if self.shuffle else 0)
            return
        if not len(self.episodes):
            return
        epoch, skip = 0, self.start
        while skip >= (length := self.epoch_length(epoch)):
            skip -= length
            epoch += 1
        step = self.start
        while step < self.total:
            for batch in self._epoch(epoch, skip):
                if step >= self.total:
                    return
                yield batch
                step += 1
            epoch, skip = epoch + 1, 0

    def _epoch(self, epoch: int, skip: int = 0):
        """The batches of data epoch ``epoch`` from its ``skip``-th on; batch p's z noise is
        drawn from ``(seed, epoch, p)``."""
        if self.pack:
            yield from self._packed_epoch(epoch, skip)
            return
        queue = list(self._order(epoch))[::-1]
        B, S = self.batch_size, self.seq_len
        lane_ep, lane_pos = np.full(B, -1), np.zeros(B, np.int64)
        starts, ends = self.store.episode_starts, self.store.episode_ends
        pos = 0
        while True:
            reset = np.zeros(B, bool)
            for b in range(B):  # a lane whose episode is used up takes the next one
                if lane_ep[b] < 0 or starts[lane_ep[b]] + lane_pos[b] >= ends[lane_ep[b]]:
                    lane_ep[b] = queue.pop() if queue else -1
                    lane_pos[b], reset[b] = 0, True
            if (lane_ep < 0).all():
                return
            if pos >= skip:
                live = lane_ep >= 0
                first = np.where(live, starts[np.maximum(lane_ep, 0)] + lane_pos, 0)
                end = np.where(live, ends[np.maximum(lane_ep, 0)], 0)
                idx = first[:, None] + np.arange(S + 1)
                mask = idx < end[:, None]
                idx = np.where(mask, idx, np.maximum(end - 1, 0)[:, None])
                yield self._batch(idx, mask, reset, np.random.default_rng([self.seed, epoch, pos]))
            lane_pos += S
            pos += 1

    def _packed_epoch(self, epoch: int, skip: int):
        lanes, S = self._lanes(epoch), self.seq_len
        B = self.batch_size
        for p in range(skip, self._packed_batches(lanes)):
            pos = p * S + np.arange(S + 1)
            idx = np.zeros((B, S + 1), np.int64)
            mask, start = np.zeros((B, S + 1), bool), np.zeros((B, S + 1), bool)
            for b, (stream, first) in enumerate(lanes):
                at = np.minimum(pos, len(stream) - 1)  # past the lane's end: padding
                idx[b], mask[b] = stream[at], pos < len(stream)
                start[b] = mask[b] & first[at]
            batch = self._batch(idx, mask, start[:, 0] | ~mask[:, 0],
                                np.random.default_rng([self.seed, epoch, p]))
            batch["start"] = torch.from_numpy(start)
            yield batch

    def _batch(self, idx: np.ndarray, mask: np.ndarray, reset: np.ndarray,
               rng: np.random.Generator) -> dict[str, torch.Tensor]:
        flat = idx.ravel()
        z = self.latents.sample(flat, rng).reshape(*idx.shape, -1)
        a = self.store.action_space.vector(self.store.actions(flat))
        a = a.reshape(*idx.shape, -1)
        r = self.store.rewards(flat).astype(np.float32).reshape(idx.shape)
        done = self.store.terminated(flat).astype(np.float32).reshape(idx.shape)
        for arr in (z, a, r, done):
            arr[~mask] = 0
        return {"z": torch.from_numpy(z), "a": torch.from_numpy(a), "r": torch.from_numpy(r),
                "done": torch.from_numpy(done), "mask": torch.from_numpy(mask),
                "reset": torch.from_numpy(reset)}


def _lane_batches(chunks: np.ndarray, lanes: int) -> int:
    """Batches needed when ``lanes`` lanes take episodes of ``chunks`` chunks each in order,
    each free lane taking the next (so the epoch lasts as long as the busiest lane)."""
    import heapq

    if not len(chunks):
        return 0
    load = [0] * min(lanes, len(chunks))
    for c in chunks:
        heapq.heapreplace(load, load[0] + int(c))
    return max(load)
