"""JEPA vision model: an encoder trained by predicting, in embedding space, the next frame's
target embedding from this frame's embedding and the action (no pixels predicted).

Anti-collapse, one key: ``ema`` (target = EMA of the online encoder, stop-gradient; BYOL,
I-JEPA), ``vicreg`` (variance + covariance terms; Bardes et al. 2022), ``sigreg``
(LeJEPA's sketched isotropic-Gaussian regulariser), or ``none`` (the collapse demo).
For ``vicreg``, ``sigreg`` and ``none`` the target is the online encoder itself with the
gradient flowing through both branches, as in VICReg and LeJEPA; ``none`` deliberately has
no stop-gradient either (stop-grad + predictor alone already resists collapse, SimSiam),
so it shows what the regularisers prevent. The online output ends in a BatchNorm without
affine parameters, so z cannot shrink to nothing: collapse shows as *dimensional* collapse
(every dim says the same thing; the effective rank falls), which the diagnostics report.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jepa_wm.io import UserError
from jepa_wm.nets import Predictor
from jepa_wm.vision import losses
from jepa_wm.vision.base import VisionModule, default_encoder

ANTI_COLLAPSE = ("ema", "vicreg", "sigreg", "none")


class JEPAModule(VisionModule):
    """Online encoder + target encoder + action-conditioned latent predictor.

    Args:
        latent_dim: Size of z.
        action_dim: Size of the action vector; None = filled in by train-vision from the
            rollout store's action space.
        anti_collapse: ``ema`` | ``vicreg`` | ``sigreg`` | ``none``.
        encoder: Feature trunk exposing ``out_dim`` (None = the paper's ConvEncoder); a
            linear head maps it to ``latent_dim`` when the sizes differ, then a BatchNorm
            without affine parameters puts every dim on a unit scale.
        image_size: Frame size the default encoder is built for.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        rollout_steps: Predict k steps ahead by rolling the predictor (1 = next frame).
        predictor_hidden: Width of the predictor MLP.
        predictor_depth: Hidden layers of the predictor MLP.
        ema_momentum: EMA momentum at step 0 (``ema`` only), ramped to ``ema_momentum_end``.
        ema_momentum_end: EMA momentum at the last step (cosine schedule).
        vicreg_sim: VICReg weight of the prediction (invariance) term.
        vicreg_std: VICReg weight of the variance term.
        vicreg_cov: VICReg weight of the covariance term.
        sigreg_lambda: LeJEPA's lambda: loss = (1 - lambda) * prediction + lambda * SIGReg.
        sigreg_slices: Random 1-D projections per SIGReg evaluation.
    """

    data_view = "windows"

    def __init__(self, latent_dim: int = 32, action_dim: int | None = None,
                 anti_collapse: str = "ema", encoder: nn.Module | None = None,
                 image_size: int = 64, lr: float = 3e-4, weight_decay: float = 1e-4,
                 rollout_steps: int = 1, predictor_hidden: int = 512, predictor_depth: int = 2,
                 ema_momentum: float = 0.996, ema_momentum_end: float = 1.0,
                 vicreg_sim: float = 25.0, vicreg_std: float = 25.0, vicreg_cov: float = 1.0,
                 sigreg_lambda: float = 0.05, sigreg_slices: int = 256):
        super().__init__()
        if anti_collapse not in ANTI_COLLAPSE:
            raise UserError(f"JEPAModule.anti_collapse {anti_collapse!r}: choose one of "
                            f"{', '.join(ANTI_COLLAPSE)}")
        if action_dim is None or action_dim < 1:
            raise UserError("JEPAModule.action_dim: not set; train-vision fills it from the "
                            "store, or give the env's action vector size")
        if rollout_steps < 1:
            raise UserError(f"JEPAModule.rollout_steps {rollout_steps}: must be >= 1")
        encoder = default_encoder(encoder, image_size)
        self.save_spec(latent_dim=latent_dim, action_dim=action_dim,
                       anti_collapse=anti_collapse, encoder=encoder, image_size=image_size,
                       lr=lr, weight_decay=weight_decay, rollout_steps=rollout_steps,
                       predictor_hidden=predictor_hidden, predictor_depth=predictor_depth,
                       ema_momentum=ema_momentum, ema_momentum_end=ema_momentum_end,
                       vicreg_sim=vicreg_sim, vicreg_std=vicreg_std, vicreg_cov=vicreg_cov,
                       sigreg_lambda=sigreg_lambda, sigreg_slices=sigreg_slices)
        self.latent_dim, self.anti_collapse, self.window = latent_dim, anti_collapse, rollout_steps
        head = (nn.Identity() if encoder.out_dim == latent_dim
                else nn.Linear(encoder.out_dim, latent_dim))
        # BatchNorm puts z on a unit scale per dim from step 0: frames of one game look alike,
        # so raw features barely vary and every loss (and SIGReg's gradient) starts near zero
        self.online = nn.Sequential(encoder, head, nn.BatchNorm1d(latent_dim, affine=False))
        self.target = copy.deepcopy(self.online) if anti_collapse == "ema" else None
        if self.target is not None:
            self.target.requires_grad_(False)
        self.predictor = Predictor(latent_dim, action_dim, predictor_hidden, predictor_depth)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Float frames ``(B, 3, H, W)`` -> the online embedding ``(B, latent_dim)``."""
        return self.online(x)

    @staticmethod
    def _on_valid(net: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``net`` on the frames where ``mask`` is True only (padding must not enter the
        BatchNorm statistics); zeros elsewhere. ``x`` ``(N, 3, H, W)`` -> ``(N, D)``."""
        idx = mask.nonzero().squeeze(1)
        z = net(x[idx])
        return z.new_zeros(len(x), z.shape[1]).index_put((idx,), z)

    def _embed_window(self, obs: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``obs`` ``(B, T+1, 3, H, W)``, bool ``mask`` ``(B, T+1)`` -> online ``z`` and
        target ``z_tgt``, both ``(B, T+1, D)`` (zeros where masked).

        With EMA only frame 0 needs the online net (the rest are targets, no grad);
        otherwise one shared pass serves both.
        """
        b, t1 = obs.shape[:2]
        x, flat = self.to_float(obs.flatten(0, 1)), mask.flatten()
        if self.target is None:
            z = self._on_valid(self.online, x, flat).view(b, t1, -1)
            return z, z
        with torch.no_grad():  # I-JEPA: layer-normed targets, so shrinking z cannot win
            z_tgt = F.layer_norm(self._on_valid(self.target, x, flat), (self.latent_dim,))
        z0 = self.online(self.to_float(obs[:, 0]))
        return torch.cat([z0[:, None], z_tgt.view(b, t1, -1)[:, 1:]], dim=1), \
            z_tgt.view(b, t1, -1)

    def rollout(self, z0: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Roll the predictor: ``z0`` ``(B, D)``, ``a`` ``(B, k, A)`` -> ``z_pred`` ``(B, k, D)``."""
        preds, z = [], z0
        for i in range(a.shape[1]):
            z = self.predictor(z, a[:, i])
            preds.append(z)
        return torch.stack(preds, dim=1)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Batch of windows: ``obs`` uint8 ``(B, k+1, 3, H, W)``, ``a`` float ``(B, k+1, A)``,
        ``mask`` bool ``(B, k+1)`` -> scalars ``loss``, ``pred`` (k-step prediction MSE),
        ``reg`` (the anti-collapse term), and ``copy`` (MSE of copying the last target
        embedding: the baseline ``pred`` must beat)."""
        k = self.window
        obs, a, mask = batch["obs"][:, : k + 1], batch["a"][:, :k].float(), batch["mask"][:, : k + 1]
        z, z_tgt = self._embed_window(obs, mask)
        z_pred = self.rollout(z[:, 0], a)
        valid = mask[:, 1:].float()  # a transition i -> i+1 counts when frame i+1 exists
        n = valid.sum().clamp(min=1)
        pred = ((z_pred - z_tgt[:, 1:]).pow(2).mean(-1) * valid).sum() / n
        with torch.no_grad():
            copy = ((z_tgt[:, :1] - z_tgt[:, 1:]).pow(2).mean(-1) * valid).sum() / n
        out = {"pred": pred, "copy": copy, "reg": pred.new_zeros(())}
        z_all = z[mask]  # (N_valid, D) online embeddings of every real frame
        if self.anti_collapse == "vicreg":
            out["var"], out["cov"] = losses.vicreg_variance(z_all), losses.vicreg_covariance(z_all)
            out["reg"] = self.args["vicreg_std"] * out["var"] + self.args["vicreg_cov"] * out["cov"]
            out["loss"] = self.args["vicreg_sim"] * pred + out["reg"]
        elif self.anti_collapse == "sigreg":
            lam = self.args["sigreg_lambda"]
            out["reg"] = losses.sigreg(z_all, self.args["sigreg_slices"], seed=self.global_step)
            out["loss"] = (1 - lam) * pred + lam * out["reg"]
        else:
            out["loss"] = pred
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in out.items() if k != "loss"})
        self.log("train/loss", out["loss"], prog_bar=True)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.target is None:
            return
        args = self.args
        total = self.trainer.estimated_stepping_batches
        total = int(total) if total != float("inf") else 0
        m = losses.ema_momentum(self.global_step, total, args["ema_momentum"],
                                args["ema_momentum_end"])
        losses.ema_update_(self.target, self.online, m)
        self.log("train/ema_momentum", m)

    @torch.no_grad()
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        """Prediction error against the copy-the-last-embedding baseline, and the loss."""
        out = self.losses(batch)
        return {"val_loss": out["loss"], "pred_error": out["pred"], "copy_error": out["copy"],
                "pred_to_copy": out["pred"] / out["copy"].clamp(min=1e-12)}

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.args["lr"],
                                 weight_decay=self.args["weight_decay"], fused=True)
