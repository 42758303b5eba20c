"""The contract every V fulfils, so nothing downstream knows which V it holds.

A V has ``latent_dim`` and ``encode(obs_uint8) -> z``, runs the same collapse diagnostics
every validation epoch, and is rebuilt from its checkpoint alone (``load_vision``): the
checkpoint carries the module's own ``class_path``/``init_args`` spec as plain data, so it
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from jepa_wm.io import UserError, load_weights
from jepa_wm.parts import build_part, part_class
from jepa_wm.vision import diagnostics

#: ``kind`` of a V checkpoint (``io.save_checkpoint``; M's is ``jepa_wm.memory``).
VISION_KIND = "jepa_wm.vision"

log = logging.getLogger(__name__)


def default_encoder(encoder: nn.Module | None, image_size: int) -> nn.Module:
    """The paper's ConvEncoder unless an encoder part was passed in."""
    if encoder is None:
        from jepa_wm.nets import ConvEncoder

        encoder = ConvEncoder(image_size=image_size)
    if not hasattr(encoder, "out_dim"):
        raise UserError(f"encoder {type(encoder).__name__}: has no out_dim; use "
                        "jepa_wm.nets.ConvEncoder or jepa_wm.nets.TimmEncoder")
    return encoder


def _plain(value: Any, name: str) -> Any:
    """A checkpoint-safe copy of one init arg: nets become their spec, the rest primitives."""
    if isinstance(value, nn.Module):
        spec = getattr(value, "spec", None)
        if spec is None:
            raise UserError(f"{name}: {type(value).__name__} cannot be rebuilt from a "
                            "checkpoint; use jepa_wm.nets.ConvEncoder or TimmEncoder")
        return spec
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, name) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UserError(f"{name}: {type(value).__name__} is not a plain value; checkpoints hold "
                    "numbers, strings, lists, dicts and net specs only")


class VisionModule(pl.LightningModule):
    """Base of every vision model (VAE, JEPA, frozen random encoder).

    Subclasses call ``self.save_spec(...)`` with their init args, set ``self.latent_dim``,
    implement ``embed`` (float frames -> z, differentiable) and may add validation metrics
    through ``validation_metrics``.
    """

    latent_dim: int
    #: which view of the rollout store the module trains on: "frames" or "windows"
    data_view: str = "frames"
    #: windows also start on an episode's last frame (``WindowDataset(tail=True)``)
    window_tail: bool = False
    #: length of a training window in transitions (only for data_view == "windows")
    window: int = 1
    #: the collapse alarm fires when this fraction of dims is dead (std < 0.01)
    collapse_dead_fraction: float = 0.5

    def save_spec(self, **init_args: Any) -> None:
        """Record ``class_path`` + ``init_args`` (nested net specs included) as hparams."""
        cls = type(self)
        spec = {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                "init_args": {k: _plain(v, k) for k, v in init_args.items()}}
        self.save_hyperparameters({"spec": spec})

    @property
    def spec(self) -> dict:
        """``{"class_path": ..., "init_args": {...}}``: what ``load_vision`` rebuilds."""
        return self.hparams["spec"]

    @property
    def args(self) -> dict:
        """The init args as recorded in the spec (plain values)."""
        return self.hparams["spec"]["init_args"]

    @staticmethod
    def to_float(obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(..., 3, H, W)`` -> float in [0, 1]."""
        if obs.dtype == torch.uint8:
            return obs.float() / 255.0
        return obs.float()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Float frames ``(B, 3, H, W)`` in [0, 1] -> ``z`` ``(B, latent_dim)`` (with grad)."""
        raise NotImplementedError

    def frames_in(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(B, 3, H, W)`` checked and made float in [0, 1] on V's device."""
        if obs.ndim != 4:
            raise UserError(f"encode: obs of shape {tuple(obs.shape)} is not a batch of "
                            "images; expected uint8 (B, 3, H, W)")
        return self.to_float(obs.to(self.device))

    @torch.no_grad()
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` uint8 ``(B, 3, H, W)`` -> ``z`` float ``(B, latent_dim)``."""
        return self.embed(self.frames_in(obs))

    @torch.no_grad()
    def encode_dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``obs`` uint8 ``(B, 3, H, W)`` -> ``(z, sigma)``: the posterior mean and standard
        deviation, each ``(B, latent_dim)``, for a V that has one (the VAE); ``sigma`` is
        None for a deterministic V."""
        return self.encode(obs), None

    # -- diagnostics, the same for every V --------------------------------------------------

    @staticmethod
    def first_frames(batch: Any) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` frames of a batch (the first frame of each window)."""
        obs = batch["obs"] if isinstance(batch, dict) else batch
        return obs[:, 0] if obs.ndim == 5 else obs

    def validation_metrics(self, batch: Any) -> dict[str, torch.Tensor]:
        """Extra per-batch validation means (e.g. reconstruction MSE); none by default."""
        return {}

    def on_validation_epoch_start(self) -> None:
        self._val_z: list[torch.Tensor] = []
        self._val_sums: dict[str, float] = {}
        self._val_count = 0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        obs = self.first_frames(batch)
        self._val_z.append(self.encode(obs).float().cpu())
        n = obs.shape[0]
        for key, value in self.validation_metrics(batch).items():
            self._val_sums[key] = self._val_sums.get(key, 0.0) + float(value) * n
        self._val_count += n

    def on_validation_epoch_end(self) -> None:
        if not self._val_z:
            return
        stats = diagnostics.latent_stats(torch.cat(self._val_z))
        stats.update({k: v / self._val_count for k, v in self._val_sums.items()})
        collapsed = diagnostics.is_collapsed(stats, self.collapse_dead_fraction)
        stats["collapse_alarm"] = float(collapsed)
        if collapsed and not self.trainer.sanity_checking:
            log.warning("collapse alarm at step %d: effective rank %.2f of %d, %.0f%% of "
                        "dims with std < %.2g", self.global_step, stats["effective_rank"],
                        self.latent_dim, 100 * stats["dead_fraction"], diagnostics.DEAD_STD)
        self.diagnostics = stats
        self.log_dict({f"vision/{k}": v for k, v in stats.items()})
        self._val_z = []


def _drop_files(spec: Any) -> Any:
    """The spec with ``pretrained_file`` cleared: the state dict already holds the weights."""
    if isinstance(spec, dict):
        return {k: (None if k == "pretrained_file" else _drop_files(v)) for k, v in spec.items()}
    return spec


def vision_class(spec: dict, where: str = "vision_model") -> type:
    """The VisionModule subclass a spec names; anything else is a ``UserError``."""
    return part_class(spec, VisionModule, where, "a vision model", "jepa_wm.vision.VAEModule, "
                      "JEPAModule or RandomModule (or a VisionModule subclass)")


def build_vision(spec: dict) -> VisionModule:
    """A V from its ``class_path``/``init_args`` spec (what checkpoints and configs hold)."""
    vision_class(spec)
    return build_part(spec)


def load_vision(path: str | Path, map_location: str | torch.device = "cpu") -> VisionModule:
    """Rebuild a V from its checkpoint alone (``weights_only=True``), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: vision checkpoint not found")
    ckpt = load_weights(path, map_location)  # a pickled callable is refused, not run
    spec = None
    if isinstance(ckpt, dict) and ckpt.get("kind") == VISION_KIND:
        spec = ckpt.get("spec")
    elif isinstance(ckpt, dict) and "kind" not in ckpt:  # V's Lightning-style form, before
        spec = ckpt.get("hyper_parameters", {}).get("spec")  # the one checkpoint format
    try:
        vision_class(spec)
    except UserError:
        raise UserError(f"{path}: not a vision checkpoint (no jepa_wm.vision model spec); "
                        "give the final.ckpt of train-vision") from None
    model = build_vision(_drop_files(spec))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{path}: weights do not fit {spec['class_path']} "
                        f"({str(e).splitlines()[0][:160]})") from None
    return model.eval().to(map_location)
