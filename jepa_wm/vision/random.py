"""The control for V: the paper's conv encoder at its random init and a fixed random
projection to ``latent_dim``, never trained. Anything a trained V adds is measured against it."""

from __future__ import annotations

import torch
from torch import nn

from jepa_wm.vision.base import VisionModule, default_encoder


class RandomModule(VisionModule):
    """A frozen random encoder: ``encode`` works, training is a no-op.

    Args:
        latent_dim: Size of z.
        encoder: Feature trunk exposing ``out_dim`` (None = the paper's ConvEncoder).
        image_size: Frame size the default encoder is built for.
        seed: Seed of the random weights and projection.
    """

    data_view = "frames"
    trainable = False

    def __init__(self, latent_dim: int = 32, encoder: nn.Module | None = None,
                 image_size: int = 64, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.encoder = default_encoder(encoder, image_size)
            proj = torch.randn(self.encoder.out_dim, latent_dim) / self.encoder.out_dim ** 0.5
        self.save_spec(latent_dim=latent_dim, encoder=self.encoder, image_size=image_size,
                       seed=seed)
        self.latent_dim = latent_dim
        self.encoder.requires_grad_(False)
        self.register_buffer("proj", proj)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Float frames ``(B, 3, H, W)`` -> ``(B, latent_dim)``."""
        return self.encoder(x) @ self.proj

    def configure_optimizers(self):
        return None
