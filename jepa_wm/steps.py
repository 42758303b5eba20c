"""Exact resume for V and M: what training step g sees (its batch and its noise) is a
function of the run's seed and g alone, so a training killed at step k and resumed from its
``last.ckpt`` ends with the same weights, bit for bit on CPU at the same thread count, as
one never stopped.

- ``StepBatches``: the batches of a map-style dataset addressed by step (V's frames and
  windows); M's ``EpisodeChunks`` does the same for its episode lanes.
- ``StepSeed``: seeds torch's global generator from ``(seed, g)`` before every training step,
  so the VAE's eps, dropout or any other draw of a V or M is the step's own.
- ``checkpoint_step``: the step a ``last.ckpt`` was saved at, where the data resumes.
- ``AtomicCheckpointIO``: Lightning's checkpoints written to a temporary file and renamed,
  so a kill while saving leaves the previous ``last.ckpt``, never a truncated one.

Each training is one Lightning epoch of ``total`` steps (the data's own epochs are inside
the stream), so Lightning's restored step count and the stream agree however the run was
cut; validation runs every data epoch's worth of steps (``val_check_interval``).
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from torch.utils.data import Sampler

#: Two warnings Lightning prints that are false here: on a resumed V or M fit, the data
#: streams below start at the restored step (resume is exact); on every M fit, M's
#: ``EpisodeChunks`` is read in the main process (its ``__len__`` is the step count, never
#: split across workers).
FALSE_WARNINGS = ("You're resuming from a checkpoint that ended before the epoch ended",
                  "Your `IterableDataset` has `__len__` defined")


def quiet_false_warnings() -> None:
    """Ignore ``FALSE_WARNINGS`` (called right before a V or M fit, so the filter is in
    whatever warnings context the fit runs in)."""
    for message in FALSE_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message))


def step_seed(seed: int, step: int, *more: int) -> int:
    """A 63-bit seed for step ``step`` of a run seeded ``seed`` (independent streams)."""
    state = np.random.SeedSequence([int(seed), int(step), *map(int, more)]).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


class StepSeed(pl.Callback):
    """Seeds torch's global generator from ``(seed, global_step)`` before every training
    step."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.manual_seed(step_seed(self.seed, trainer.global_step))


def checkpoint_step(ckpt: dict | None) -> int:
    """The global step a Lightning checkpoint (loaded, or None) was saved at."""
    return int(ckpt.get("global_step", 0)) if isinstance(ckpt, dict) else 0


class StepBatches(Sampler[list[int]]):
    """Batches of ``n`` items addressed by training step: step ``g`` takes items
    ``perm_e[p * B:(p + 1) * B]`` where ``e, p = divmod(g, per_epoch)`` and ``perm_e`` is
    the permutation drawn from ``(seed, e)``. Iterates the steps ``start .. total - 1``;
    its length is ``total`` (the step count a resumed trainer counts on from).

    ``per_epoch`` is ``n // B`` (the last partial batch dropped) when ``n > B``, else one
    batch of all ``n`` items.
    """

    def __init__(self, n: int, batch_size: int, seed: int, total: int = 0, start: int = 0):
        if n < 1 or batch_size < 1 or total < 0:
            raise ValueError(f"StepBatches: n {n}, batch_size {batch_size}, total {total}")
        self.n, self.batch_size, self.seed = n, batch_size, int(seed)
        self.total, self.start = int(total), int(start)
        self.per_epoch = n // batch_size if n > batch_size else 1

    def __len__(self) -> int:
        return self.total

    def __iter__(self):
        perm, epoch = None, -1
        for step in range(self.start, self.total):
            e, pos = divmod(step, self.per_epoch)
            if e != epoch:
                perm, epoch = np.random.default_rng([self.seed, e]).permutation(self.n), e
            yield perm[pos * self.batch_size:(pos + 1) * self.batch_size].tolist()


def total_steps(epoch_steps: int, max_steps: int) -> int:
    """The steps a training runs: ``epoch_steps`` (the batches of its ``max_epochs`` data
    epochs), capped by ``max_steps`` when it is > 0."""
    return min(epoch_steps, max_steps) if max_steps > 0 else epoch_steps


def read_checkpoint(path: Path) -> dict | None:
    """A ``last.ckpt`` loaded safely (``weights_only``; pickled code is refused with a
    one-line error), or None when there is none."""
    from jepa_wm import io

    return io.load_weights(path) if Path(path).exists() else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic (``jepa_wm.io.atomic_path``)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        from jepa_wm import io

        with io.atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


#: The learning-curve file of V's and M's folders (``ValidationLog``).
VALIDATION_LOG = "validation.json"


class ValidationLog(pl.Callback):
    """The learning curve on disk, W&B or not: after every validation, its metrics (M's
    ``val/*`` losses, V's ``vision/*`` diagnostics on held-out frames) with the training
    step (``step``) and the seconds of training so far (``seconds``) are appended to
    ``path`` (a JSON list, ``VALIDATION_LOG`` in V's and M's folders, rewritten
    atomically).

    On a resumed fit the entries after the restored step (the killed part's, redone now)
    are dropped, so the log is the one an uninterrupted run writes; ``seconds`` then counts
    the earlier part up to its last kept entry. Lightning does not repeat a validation due at
    the very step a run resumes from, so a run killed in that window lacks that one entry.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: list[dict] = []
        self._t0: float | None = None  # when this process's fit started training
        self._offset = 0.0  # training seconds of the kept entries of an earlier run

    def on_train_start(self, trainer, pl_module):  # after a checkpoint's step is restored
        from jepa_wm import io

        old = io.read_json(self.path) if self.path.exists() else []
        step = trainer.global_step
        self.entries = [e for e in old if isinstance(e, dict) and e.get("step", 1e18) <= step]
        self._offset = self.entries[-1]["seconds"] if self.entries else 0.0
        self._t0 = time.perf_counter()
        if len(self.entries) != len(old):
            io.write_json(self.path, self.entries)

    def on_validation_end(self, trainer, pl_module):
        from jepa_wm import io

        if trainer.sanity_checking or self._t0 is None:
            return  # (a validate() after this fit is its last point: V's final weights)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith(("val/", "vision/"))}
        self.entries.append({"step": int(trainer.global_step),
                             "seconds": round(self._offset + time.perf_counter() - self._t0, 3),
                             **metrics})
        io.write_json(self.path, self.entries)
