"""Latent sets: z for every stored frame, written by ``encode`` and read by M and C.

A folder with ``z.npy`` (float32 ``(N_frames, latent_dim)``, row i = frame i of the store)
and ``meta.json`` (``vision_sha256`` of the checkpoint that made it, ``latent_dim``,
per-dim ``mean``/``std``, ``frames``, ``store`` = the rollout store's absolute path and
``store_identity``). A latent set made by another
vision checkpoint is refused, so stale latents are never used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from jepa_wm.io import UserError, atomic_path, read_json, sha256_file, write_json

Z_FILE, META_FILE = "z.npy", "meta.json"


def write_latents(out: str | os.PathLike, frames: int, latent_dim: int,
                  batches: Iterable[np.ndarray], meta: dict[str, Any] | None = None) -> None:
    """Write a latent set from ``batches`` of z (``(B, latent_dim)``, in frame order).

    ``z.npy`` is filled through a memory map under a temporary name and renamed only when
    all ``frames`` rows are written; ``meta.json`` (``meta`` + ``latent_dim``, ``frames``
    and the per-dim ``mean``/``std``, accumulated in float64) follows. A failure leaves the
    folder as it was.
    """
    out = Path(out)
    total = np.zeros(latent_dim, np.float64)
    total_sq = np.zeros(latent_dim, np.float64)
    start = 0
    for stale in out.glob(f".{Z_FILE}.*.tmp"):  # left by a killed write; never read
        stale.unlink()
    with atomic_path(out / Z_FILE) as tmp:
        z_map = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(frames, latent_dim))
        for z in batches:
            z = np.asarray(z, dtype=np.float32)
            if not np.isfinite(z).all():
                raise UserError(f"encode: non-finite z for frames {start}..{start + len(z) - 1}"
                                "; the vision checkpoint is broken (NaN weights?)")
            z_map[start:start + len(z)] = z
            total += z.sum(0, dtype=np.float64)
            total_sq += np.square(z, dtype=np.float64).sum(0)
            start += len(z)
        if start != frames:
            raise UserError(f"encode: got {start} latents for {frames} frames")
        z_map.flush()
        del z_map  # close the map before the rename
    mean = total / max(frames, 1)
    std = np.sqrt(np.maximum(total_sq / max(frames, 1) - mean ** 2, 0.0))
    write_json(out / META_FILE, {**(meta or {}), "latent_dim": int(latent_dim),
                                 "frames": int(frames), "mean": mean.tolist(),
                                 "std": std.tolist()})


class LatentSet:
    """Read a latent set (memory-mapped).

    Args:
        path: The latents folder.
        vision_ckpt: When given, the set must have been made by this exact checkpoint
            (sha256 match); otherwise a ``UserError``.

    Attributes: ``z`` (``(N, D)`` float32 memmap), ``meta``, ``latent_dim``, ``mean`` and
    ``std`` (``(D,)`` float32), ``frames``, ``vision_sha256``.
    """

    def __init__(self, path: str | os.PathLike, vision_ckpt: str | os.PathLike | None = None):
        self.path = Path(path)
        if not (self.path / META_FILE).exists() or not (self.path / Z_FILE).exists():
            raise UserError(f"{self.path}: not a latent set (needs {Z_FILE} and {META_FILE}); "
                            "run `jepa-wm encode --out` first")
        self.meta = read_json(self.path / META_FILE)
        try:
            self.z = np.load(self.path / Z_FILE, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{self.path / Z_FILE}: truncated or corrupt ({e}); encode again")
        self.latent_dim = int(self.meta["latent_dim"])
        self.frames = int(self.meta["frames"])
        if self.z.shape != (self.frames, self.latent_dim):
            raise UserError(f"{self.path / Z_FILE}: shape {self.z.shape}, meta.json says "
                            f"{(self.frames, self.latent_dim)}; encode again")
        self.mean = np.asarray(self.meta["mean"], np.float32)
        self.std = np.asarray(self.meta["std"], np.float32)
        self.vision_sha256 = self.meta.get("vision_sha256")
        if vision_ckpt is not None and sha256_file(vision_ckpt) != self.vision_sha256:
            raise UserError(f"{self.path}: latent set was made by another vision checkpoint "
                            f"than {vision_ckpt}; encode again with it")

    def __len__(self) -> int:
        return self.frames

    def standardized(self, idx: Any = slice(None), eps: float = 1e-6) -> np.ndarray:
        """``(z[idx] - mean) / std`` as float32 (the scale M trains on, for any V)."""
        return ((np.asarray(self.z[idx]) - self.mean) / (self.std + eps)).astype(np.float32)
