"""A dream as a GIF beside the real episode it started from (the report shows one per
variant): the real frames, for each dreamed z the nearest stored frame, and, for a V that
can decode, the dreamed z decoded to pixels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jepa_wm.contract import stage_folder
from jepa_wm.io import UserError

if TYPE_CHECKING:
    import torch

    from jepa_wm.report.runs import SeedRun


def dream_gifs(runs: list[SeedRun], out: Path) -> list[Path]:
    """One GIF per variant (its first finished seed) of a dream beside the real episode
    it started from; a variant whose files cannot be read is skipped with a note."""
    paths = []
    for variant in sorted({r.variant for r in runs}):
        run = next((r for r in runs if r.variant == variant and r.ok), None)
        if run is None:
            continue
        try:
            paths.append(render_dream_gif(run, out / f"dream-{variant}.gif"))
        except Exception as e:  # a picture must never sink the table
            print(f"report: no dream GIF for {variant}: {type(e).__name__}: {e}")
    return paths


def nearest_frames(z: torch.Tensor, latents, memory, store, chunk: int = 65536) -> np.ndarray:
    """For each dreamed latent ``z`` ``(T, D)`` (M's standardised space), the stored frame
    whose latent is nearest (L2, standardised): uint8 ``(T, 3, H, W)``."""
    import torch

    best_d = torch.full((len(z),), float("inf"))
    best_i = torch.zeros(len(z), dtype=torch.long)
    for start in range(0, len(latents.z), chunk):
        block = memory.standardise(torch.tensor(np.array(latents.z[start:start + chunk]),
                                                dtype=torch.float32))
        d, i = torch.cdist(z, block).min(dim=1)
        better = d < best_d
        best_d[better], best_i[better] = d[better], i[better] + start
    return store.frames(best_i.numpy())


def _to_rgb(frames: np.ndarray, size: int) -> list:
    """uint8 ``(T, 3, H, W)`` -> PIL images ``size x size``."""
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0))).resize(
        (size, size), Image.NEAREST) for f in frames]


def render_dream_gif(run: SeedRun, path: Path, max_frames: int = 100, seed: int = 0,
                     scale: int = 2) -> Path:
    """Animate one dream of ``run``'s M beside the real episode it started from.

    The dream starts from the latent of the episode's first frame and is fed the
    episode's own actions, so each dreamed step lines up with a real one. Panels: the real
    frames; for each dreamed z the nearest real frame in the store's latents (any V);
    and, when V can ``decode`` (the VAE), the dreamed z decoded to pixels. After the dream
    ends (M predicts death) its last frame stays, darkened.
    """
    import torch

    with torch.no_grad():
        return _render_dream_gif(run, path, max_frames, seed, scale)


def _render_dream_gif(run: SeedRun, path: Path, max_frames: int, seed: int, scale: int
                      ) -> Path:
    import torch
    from PIL import Image, ImageDraw

    from jepa_wm.data import RolloutStore
    from jepa_wm.dream import Dream
    from jepa_wm.memory import load_latents, load_memory
    from jepa_wm.vision.base import load_vision

    store_dir = (run.pipeline or {}).get("store")
    if not store_dir:
        raise UserError(f"{run.folder}/pipeline.json: does not name the rollout store")
    store = RolloutStore(Path(store_dir) / "rollouts")
    memory = load_memory(stage_folder(run.folder, "train-memory") / "final.ckpt")
    latents = load_latents(stage_folder(run.folder, "encode"))
    vision = load_vision(stage_folder(run.folder, "train-vision") / "final.ckpt")
    tau = float(((run.config or {}).get("controller_train") or {}).get("tau", 1.0))

    ep = int(np.argmax(store.episode_lengths))  # the longest episode shows the most
    start = int(store.episode_starts[ep])
    steps = int(min(store.episode_lengths[ep], max_frames))
    real = store.frames(slice(start, start + steps))
    actions = store.actions(slice(start, start + steps))
    z0 = memory.standardise(torch.tensor(np.array(latents.z[start:start + 1]),
                                         dtype=torch.float32))
    dream = Dream(memory, z0, tau=tau, max_steps=steps, compact=False)
    state = dream.reset(1, seed=seed)
    zs = [z0[0]]
    for t in range(steps - 1):
        state, z, _, done = dream.step(state, torch.as_tensor(actions[t:t + 1]))
        zs.append(z[0])
        if bool(done[0]):
            break
    dreamed = torch.stack(zs)  # (T', D) standardised
    panels = {"real": real, "dream: nearest": nearest_frames(dreamed, latents, memory, store)}
    if callable(getattr(vision, "decode", None)):
        raw = dreamed * memory.latent_std + memory.latent_mean
        pix = vision.decode(raw.to(vision.device)).clamp(0, 1).cpu()
        panels["dream: decoded"] = (pix.numpy() * 255).round().astype(np.uint8)
    size = real.shape[-1] * scale
    columns = []
    for name, frames in panels.items():
        images = _to_rgb(frames, size)
        while len(images) < steps:  # the dream ended: hold its last frame, darkened
            images.append(Image.eval(images[len(zs) - 1], lambda v: v // 3))
        columns.append((name, images))
    gif = []
    for t in range(steps):
        canvas = Image.new("RGB", (size * len(columns), size + 14), "black")
        draw = ImageDraw.Draw(canvas)
        for k, (name, images) in enumerate(columns):
            canvas.paste(images[t], (k * size, 14))
            draw.text((k * size + 2, 1), name, fill="white")
        gif.append(canvas)
    gif[0].save(path, save_all=True, append_images=gif[1:], duration=70, loop=0,
                optimize=True)
    return path
