"""The contract every V fulfils, so nothing downstream knows which V it holds."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class VisionModule(pl.LightningModule):
    """Base of every vision model (VAE, JEPA, frozen random encoder).

    Subclasses set ``self.latent_dim`` and implement ``encode``.
    """

    latent_dim: int

    @torch.no_grad()
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` uint8 ``(B, 3, H, W)`` -> ``z`` float ``(B, latent_dim)``."""
        raise NotImplementedError
