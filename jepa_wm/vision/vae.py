"""Ha & Schmidhuber's ConvVAE (World Models, 2018): pixel reconstruction + KL with free bits.

Loss per image: sum of squared pixel errors + max(KL, kl_tolerance * latent_dim), as in
the paper's code (``kl_tolerance = 0.5``), averaged over the batch. ``encode`` = the mean;
``encode_dist`` adds the posterior sigma, which M's training resamples z from.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jepa_wm.nets import ConvDecoder
from jepa_wm.vision.base import VisionModule, default_encoder


class VAEModule(VisionModule):
    """The pixel VAE (the paper's V).

    Args:
        latent_dim: Size of z (the paper: 32 for CarRacing, 64 for Doom).
        lr: Adam learning rate (the paper: 1e-4).
        kl_tolerance: Free bits: the KL term is floored at ``kl_tolerance * latent_dim``.
        encoder: Feature trunk exposing ``out_dim`` (None = the paper's ConvEncoder).
        image_size: Frame size the default encoder is built for.
        log_images: Reconstructions shown in the logger's image grid each validation epoch.
    """

    data_view = "frames"

    def __init__(self, latent_dim: int = 32, lr: float = 1e-4, kl_tolerance: float = 0.5,
                 encoder: nn.Module | None = None, image_size: int = 64,
                 log_images: int = 8):
        super().__init__()
        self.encoder = default_encoder(encoder, image_size)
        self.save_spec(latent_dim=latent_dim, lr=lr, kl_tolerance=kl_tolerance,
                       encoder=self.encoder, image_size=image_size, log_images=log_images)
        self.latent_dim, self.lr, self.kl_tolerance = latent_dim, lr, kl_tolerance
        self.log_images = log_images
        self.mu = nn.Linear(self.encoder.out_dim, latent_dim)
        self.logvar = nn.Linear(self.encoder.out_dim, latent_dim)
        self.decoder = ConvDecoder(latent_dim)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float frames ``(B, 3, H, W)`` -> ``mu``, ``logvar`` each ``(B, latent_dim)``."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    @torch.no_grad()
    def encode_dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs`` uint8 ``(B, 3, H, W)`` -> posterior ``mu`` and ``sigma`` ``(B, latent_dim)``."""
        mu, logvar = self.posterior(self.frames_in(obs))
        return mu, torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, latent_dim)`` -> frames float ``(B, 3, 64, 64)`` in [0, 1]."""
        return self.decoder(z)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Float frames ``(B, 3, H, W)`` -> scalar ``loss``, ``recon``, ``kl`` and ``x_hat``."""
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_hat = self.decoder(z)
        if x_hat.shape[-2:] != x.shape[-2:]:  # the paper's decoder draws 64x64
            x_hat = F.interpolate(x_hat, size=x.shape[-2:], mode="bilinear", align_corners=False)
        recon = (x_hat - x).pow(2).flatten(1).sum(1).mean()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        kl = kl.clamp(min=self.kl_tolerance * self.latent_dim).mean()
        return {"loss": recon + kl, "recon": recon, "kl": kl, "x_hat": x_hat}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out = self.losses(self.to_float(self.first_frames(batch)))
        self.log_dict({"train/recon": out["recon"], "train/kl": out["kl"]})
        self.log("train/loss", out["loss"], prog_bar=True)
        return out["loss"]

    def validation_metrics(self, batch: Any) -> dict[str, torch.Tensor]:
        x = self.to_float(self.first_frames(batch))
        out = self.losses(x)
        if not getattr(self, "_grid_pending", False):
            self._grid = torch.cat([x[: self.log_images], out["x_hat"][: self.log_images]])
            self._grid_pending = True
        return {"val_loss": out["loss"], "recon_mse": F.mse_loss(out["x_hat"], x)}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        logger = self.logger
        if getattr(self, "_grid_pending", False) and hasattr(logger, "log_image"):
            from torchvision.utils import make_grid

            grid = make_grid(self._grid.cpu(), nrow=max(1, len(self._grid) // 2))
            logger.log_image(key="vision/reconstructions", images=[grid],
                             caption=["top: frames, bottom: reconstructions"],
                             step=self.global_step)
        self._grid_pending = False

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, fused=True)
