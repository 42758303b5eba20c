"""``encode``: z for every frame of a rollout store, tagged with the vision checkpoint's hash.

Frames are read from the store's memory maps in batches and z is written through a memory
map (``jepa_wm.data.latents.write_latents``), so RAM stays flat whatever the store's size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from jepa_wm import io
from jepa_wm.contract import identity as stage_identity
from jepa_wm.data.latents import META_FILE, Z_FILE, write_latents
from jepa_wm.data.store import RolloutStore
from jepa_wm.vision.base import VisionModule, load_vision

#: Bumped when what encode writes changes (2: the posterior sigma beside z), so a latent set
#: written by older code is made again instead of being taken as done.
LATENTS_FORMAT = 2


def store_identity(store: RolloutStore) -> dict:
    """What makes a store this store: path, env, frame count and a hash of its meta.json
    (which holds every shard's sha256; the game state, used only by the probes, left out)."""
    return {"path": str(store.root.resolve()), "env_id": store.meta.get("env_id"),
            "frames": store.num_frames, "meta_hash": io.hash_obj(store.content_meta)}


def check_out(out: Path) -> None:
    """``out`` must be a new folder or a latent set: encoding into another stage's folder
    (a rollout store, whose meta.json holds its checksums) would overwrite its files."""
    if out.exists() and not out.is_dir():
        raise io.UserError(f"{out}: is a file; give a folder for --out")
    meta = out / META_FILE
    if meta.exists() and "vision_sha256" not in io.read_json(meta):
        raise io.UserError(f"{out}: holds a {META_FILE} that is not a latent set's (a rollout "
                           "store?); give encode a new or latents --out folder")


def _batches(model: VisionModule, store: RolloutStore, batch_size: int,
             progress) -> Iterator[np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """z per batch of frames, or ``(mu, sigma)`` for a V with a posterior."""
    for start in range(0, store.num_frames, batch_size):
        stop = min(start + batch_size, store.num_frames)
        obs = torch.from_numpy(store.frames(slice(start, stop)))
        z, sigma = model.encode_dist(obs)
        z = z.float().cpu().numpy()
        yield z if sigma is None else (z, sigma.float().cpu().numpy())
        progress(stop - start)


def encode_store(vision: str | Path, data: str | Path, out: str | Path,
                 batch_size: int = 256, show_progress: bool = True) -> Path:
    """Write ``out/z.npy`` + ``out/meta.json`` for every frame of ``data`` with the V in the
    checkpoint ``vision``; skipped when ``out`` is done for the same checkpoint and store."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    out, store = Path(out), RolloutStore(data)
    check_out(out)
    if not Path(vision).is_file():
        raise io.UserError(f"{vision}: vision checkpoint not found; give the final.ckpt of "
                           "train-vision")
    vision_sha = io.sha256_file(vision)
    identity = store_identity(store)
    config_hash = stage_identity("encode", {}, upstream=io.hash_obj({
        "vision_sha256": vision_sha, "store": identity["meta_hash"], "format": LATENTS_FORMAT}))
    if io.is_done(out, config_hash) and (out / Z_FILE).exists():
        print(f"encode: {out} is done for this checkpoint and store; skipping")
        return out
    model = load_vision(vision)
    size = model.args.get("image_size")
    if size is not None and tuple(store.image_shape[-2:]) != (size, size):
        raise io.UserError(f"{data}: frames of {store.image_shape[-2]}x{store.image_shape[-1]}"
                           f"; {vision} is a V for {size}x{size} frames; encode a store of "
                           "that size (or train V on this one)")
    io.claim(out, config_hash, "encode")  # another V's or store's latents are moved aside
    for stale in (io.DONE_FILE, META_FILE):  # never leave old metadata beside new z
        (out / stale).unlink(missing_ok=True)
    t0 = time.perf_counter()
    columns = [TextColumn("encode"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[fps]} frames/s"), TimeRemainingColumn()]
    with Progress(*columns, disable=not show_progress) as bar:
        task = bar.add_task("encode", total=store.num_frames, fps="-")

        def advance(n: int) -> None:
            done = bar.tasks[task].completed + n
            bar.update(task, advance=n, fps=f"{done / (time.perf_counter() - t0):.0f}")

        write_latents(out, store.num_frames, model.latent_dim,
                      _batches(model, store, batch_size, advance),
                      meta={"vision_sha256": vision_sha, "vision_ckpt": str(vision),
                            "vision_class": model.spec["class_path"],
                            "store": str(Path(data).resolve()), "store_identity": identity})
    seconds = time.perf_counter() - t0
    io.mark_done(out, config_hash, frames=store.num_frames,
                 frames_per_s=store.num_frames / max(seconds, 1e-9))
    print(f"encode: wrote {out / Z_FILE} ({store.num_frames} frames x {model.latent_dim}, "
          f"{store.num_frames / max(seconds, 1e-9):.0f} frames/s)")
    return out
