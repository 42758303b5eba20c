"""Any timm image model as a V encoder trunk: a new encoder is a config change.

``TimmEncoder("resnet18")`` or, from YAML, ``model_name: vit_tiny_patch16_224`` with
``timm_kwargs: {img_size: 64, patch_size: 8}``: the classifier is removed
(``num_classes=0``) and the backbone's output, measured on one blank frame at build time
(some models put a conv head after pooling, so ``num_features`` is not always what comes
out), is projected to ``latent_dim``. Weights are random unless a local file is given:
there is no download.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from jepa_wm.io import UserError


def _check_model_name(model_name: str) -> None:
    if timm.is_model(model_name):
        return
    close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise UserError(f"TimmEncoder: unknown timm model {model_name!r}{hint}")


class TimmEncoder(nn.Module):
    """A timm backbone: float frames in [0, 1] ``(B, C, H, W)`` -> ``(B, out_dim)``.

    Args:
        model_name: Any timm model name (``resnet18``, ``vit_tiny_patch16_224``, ...).
        latent_dim: Project the backbone's output to this size (None = its own size).
        pretrained_file: Local weights file (``.pth``/``.safetensors``) loaded through
            timm's pretrained machinery; None = random init. Hub downloads are not used.
        timm_kwargs: Keyword arguments for ``timm.create_model``, the form YAML takes (e.g.
            ``{img_size: 64, patch_size: 8}`` for a ViT on 64-px frames, ``in_chans``,
            ``drop_path_rate``).
        image_size: Frame size the backbone must take (checked on one blank frame).
        **kwargs: More ``timm.create_model`` arguments, for Python callers
            (``TimmEncoder("vit_tiny_patch16_224", img_size=64, patch_size=8)``).
    """

    def __init__(self, model_name: str, latent_dim: int | None = None,
                 pretrained_file: str | None = None,
                 timm_kwargs: dict[str, Any] | None = None, image_size: int = 64,
                 **kwargs: Any):
        super().__init__()
        _check_model_name(model_name)
        timm_kwargs = {**(timm_kwargs or {}), **kwargs}
        if timm_kwargs.pop("pretrained", False):
            raise UserError(f"TimmEncoder({model_name}): pretrained=True needs a download; "
                            "pass pretrained_file=PATH to a local weights file instead")
        self.spec = {"class_path": "jepa_wm.nets.TimmEncoder",
                     "init_args": {"model_name": model_name, "latent_dim": latent_dim,
                                   "pretrained_file": pretrained_file,
                                   "timm_kwargs": dict(timm_kwargs), "image_size": image_size}}
        self.backbone = self._create(model_name, pretrained_file, timm_kwargs)
        cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
        chans = timm_kwargs.get("in_chans", 3)
        mean = torch.tensor(cfg.get("mean", (0.5,) * 3)[:chans] if chans == 3 else [0.5] * chans)
        std = torch.tensor(cfg.get("std", (0.5,) * 3)[:chans] if chans == 3 else [0.5] * chans)
        # the normalisation the backbone was designed (or pretrained) for
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        features = self._output_size(model_name, chans, image_size)
        self.proj = nn.Linear(features, latent_dim) if latent_dim else nn.Identity()
        self.out_dim = latent_dim or features

    def _output_size(self, model_name: str, chans: int, image_size: int) -> int:
        """What the backbone really returns for one blank frame (a one-line error when it
        cannot take frames of this size)."""
        was = self.backbone.training
        try:
            with torch.no_grad():
                out = self.backbone.eval()(torch.zeros(1, chans, image_size, image_size))
        except Exception as e:  # timm raises assertion, runtime and value errors here
            hint = (f" set timm_kwargs: {{img_size: {image_size}, patch_size: 8}}"
                    if "img_size" in str(e) or "Input height" in str(e) or "patch" in str(e)
                    else " set timm_kwargs (e.g. img_size) or image_size to what it takes")
            raise UserError(f"TimmEncoder({model_name}): cannot take {image_size}x{image_size} "
                            f"frames ({' '.join(str(e).split())[:160]});{hint}") from None
        finally:
            self.backbone.train(was)
        return int(out.reshape(1, -1).shape[1])

    @staticmethod
    def _create(model_name: str, pretrained_file: str | None, kwargs: dict) -> nn.Module:
        if pretrained_file is None:
            return timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        if not Path(pretrained_file).is_file():
            raise UserError(f"TimmEncoder: pretrained_file {pretrained_file} does not exist; "
                            "give a local .pth or .safetensors file")
        # timm's loader (not a raw load_state_dict) adapts classifier, channels and pos-embeds
        return timm.create_model(model_name, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay={"file": str(pretrained_file)},
                                 **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float ``(B, C, H, W)`` in [0, 1] -> ``(B, out_dim)``."""
        return self.proj(self.backbone((x - self.mean) / self.std).flatten(1))
