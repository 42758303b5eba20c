"""Latent sets: z for every stored frame, written by ``encode`` and read by M and C.

A folder with ``z.npy`` (float32 ``(N_frames, latent_dim)``, row i = frame i of the store;
for a V with a posterior, the VAE, its mean), ``sigma.npy`` when V has a posterior (its
standard deviation, same shape: M trains on ``z = mu + sigma * eps`` resampled every
batch, as Ha's doomrnn) and ``meta.json`` (``vision_sha256`` of the checkpoint that made it, ``latent_dim``,
per-dim ``mean``/``std`` of the latents M sees (with ``sigma``: of the sampled z, i.e.
``std^2 = var(mu) + E[sigma^2]``, so a dim that carries no information is not blown up to
unit variance), ``mu_std`` (the spread of the means alone), ``frames``, ``store`` = the rollout store's absolute path and
``store_identity``). A latent set made by another
vision checkpoint is refused, so stale latents are never used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jepa_wm.io import UserError, atomic_path, new_memmap, read_json, sha256_file, write_json

Z_FILE, SIGMA_FILE, META_FILE = "z.npy", "sigma.npy", "meta.json"


def write_latents(out: str | os.PathLike, frames: int, latent_dim: int,
                  batches: Iterable[np.ndarray | tuple[np.ndarray, np.ndarray]],
                  meta: dict[str, Any] | None = None) -> None:
    """Write a latent set from ``batches`` of z (``(B, latent_dim)``, in frame order), or of
    ``(mu, sigma)`` pairs for a V with a posterior.

    ``z.npy`` (and ``sigma.npy``) are filled through memory maps under temporary names and
    renamed only when all ``frames`` rows are written; ``meta.json`` (``meta`` +
    ``latent_dim``, ``frames`` and the per-dim statistics, accumulated in float64) follows.
    A failure leaves the folder as it was.
    """
    out = Path(out)
    total = np.zeros(latent_dim, np.float64)
    total_sq = np.zeros(latent_dim, np.float64)
    total_var = np.zeros(latent_dim, np.float64)
    start, has_sigma = 0, None
    for stale in [*out.glob(f".{Z_FILE}.*.tmp"), *out.glob(f".{SIGMA_FILE}.*.tmp")]:
        stale.unlink()  # left by a killed write; never read
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out / Z_FILE))
        z_map = new_memmap(tmp, np.float32, (frames, latent_dim))
        sigma_map = None
        for batch in batches:
            z, sigma = batch if isinstance(batch, tuple) else (batch, None)
            if has_sigma is None:
                has_sigma = sigma is not None
                if has_sigma:  # published (renamed) together with z, or not at all
                    tmp_sigma = stack.enter_context(atomic_path(out / SIGMA_FILE))
                    sigma_map = new_memmap(tmp_sigma, np.float32, (frames, latent_dim))
            z = np.asarray(z, dtype=np.float32)
            if not np.isfinite(z).all() or (sigma is not None and not np.isfinite(sigma).all()):
                raise UserError(f"encode: non-finite z for frames {start}..{start + len(z) - 1}"
                                "; the vision checkpoint is broken (NaN weights?)")
            z_map[start:start + len(z)] = z
            total += z.sum(0, dtype=np.float64)
            total_sq += np.square(z, dtype=np.float64).sum(0)
            if sigma_map is not None:
                sigma_map[start:start + len(z)] = sigma
                total_var += np.square(sigma, dtype=np.float64).sum(0)
            start += len(z)
        if start != frames:
            raise UserError(f"encode: got {start} latents for {frames} frames")
        z_map.flush()
        del z_map  # close the maps before the renames
        if sigma_map is not None:
            sigma_map.flush()
            del sigma_map
    if not has_sigma:  # an older set's sigma must not sit beside new z
        (out / SIGMA_FILE).unlink(missing_ok=True)
    n = max(frames, 1)
    mean = total / n
    mu_var = np.maximum(total_sq / n - mean ** 2, 0.0)
    std = np.sqrt(mu_var + total_var / n)
    write_json(out / META_FILE, {**(meta or {}), "latent_dim": int(latent_dim),
                                 "frames": int(frames), "mean": mean.tolist(),
                                 "std": std.tolist(), "mu_std": np.sqrt(mu_var).tolist(),
                                 "sigma": bool(has_sigma)})


class LatentSet:
    """Read a latent set (memory-mapped).

    Args:
        path: The latents folder.
        vision_ckpt: When given, the set must have been made by this exact checkpoint
            (sha256 match); otherwise a ``UserError``.

    Attributes: ``z`` (``(N, D)`` float32 memmap), ``sigma`` (same, or None when V gives
    no posterior), ``meta``, ``latent_dim``, ``mean`` and
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
        self.sigma = None
        if self.meta.get("sigma"):
            try:
                self.sigma = np.load(self.path / SIGMA_FILE, mmap_mode="r")
            except (ValueError, OSError, EOFError) as e:
                raise UserError(f"{self.path / SIGMA_FILE}: missing, truncated or corrupt "
                                f"({e}); encode again") from None
        self.latent_dim = int(self.meta["latent_dim"])
        self.frames = int(self.meta["frames"])
        if self.z.shape != (self.frames, self.latent_dim):
            raise UserError(f"{self.path / Z_FILE}: shape {self.z.shape}, meta.json says "
                            f"{(self.frames, self.latent_dim)}; encode again")
        if self.sigma is not None and self.sigma.shape != self.z.shape:
            raise UserError(f"{self.path / SIGMA_FILE}: shape {self.sigma.shape}, z.npy has "
                            f"{self.z.shape}; encode again")
        self.mean = np.asarray(self.meta["mean"], np.float32)
        self.std = np.asarray(self.meta["std"], np.float32)
        self.vision_sha256 = self.meta.get("vision_sha256")
        if vision_ckpt is not None and sha256_file(vision_ckpt) != self.vision_sha256:
            raise UserError(f"{self.path}: latent set was made by another vision checkpoint "
                            f"than {vision_ckpt}; encode again with it")

    def __len__(self) -> int:
        return self.frames

    def sample(self, idx: Any, generator: np.random.Generator) -> np.ndarray:
        """Raw latents of frames ``idx``: ``mu + sigma * eps`` with fresh noise when the set
        has a posterior, else ``z`` itself (float32)."""
        z = np.asarray(self.z[idx], dtype=np.float32)
        if self.sigma is None:
            return z
        eps = generator.standard_normal(z.shape, dtype=np.float32)
        return z + np.asarray(self.sigma[idx], dtype=np.float32) * eps

    def standardized(self, idx: Any = slice(None), eps: float = 1e-6) -> np.ndarray:
        """``(z[idx] - mean) / std`` as float32 (the scale M trains on, for any V)."""
        return ((np.asarray(self.z[idx]) - self.mean) / (self.std + eps)).astype(np.float32)


def latents_store_path(latents: LatentSet, override: str | None = None) -> Path:
    """The rollout store a latent set indexes: ``override`` (``--data``) or the path its
    meta.json records (``store``)."""
    found = override or latents.meta.get("store")
    if not found:
        raise UserError(f"{latents.path}/meta.json: does not name its rollout store; pass "
                        "--data STORE")
    return Path(found)
