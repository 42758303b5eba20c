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

Options from the literature, one key each, all off by default (the variant files in
``configs/variants/`` say what each tests):

- multi-step open-loop prediction: ``rollout_steps`` k rolls the predictor k steps from the
  first embedding (PLDM), step i weighted by ``rollout_discount`` ** (i - 1) (TD-MPC2's
  rho, 0.5 over 3 steps);
- history context: the predictor sees the last ``context_frames`` embeddings (DINO-WM: 3);
- PLDM's extra terms on VICReg: temporal smoothness ``vicreg_smooth`` (mean squared change
  of consecutive embeddings) and inverse dynamics ``idm_weight`` (an MLP recovers the
  action vector from two consecutive embeddings, MSE);
- SIGReg weighted as LeJEPA, ``(1 - lambda) pred + lambda reg`` (``sigreg_weighting:
  convex``), or as LeWM, ``pred + lambda reg`` (``additive``, lambda 0.1), with
  ``predictor_dropout`` (LeWM: 0.1);
- ``task_weight``: reward and death heads on the *predicted* latents, trained with V
  (TD-MPC2's task-aware latents). This gives V the task signal the other variants lack.
  ``task_input: embedding`` puts the heads on the online embedding of the frame each step
  starts from instead: z itself must show the step's reward and death, which is what M's
  death head reads (the ``death_next`` probe asks the same of z).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

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
        sigreg_lambda: SIGReg's weight lambda (see ``sigreg_weighting``).
        sigreg_slices: Random 1-D projections per SIGReg evaluation.
        rollout_discount: Weight of prediction step i is ``rollout_discount ** (i - 1)``
            (normalised); 1 = every step alike.
        context_frames: Embeddings the predictor sees (1 = the last frame only).
        predictor_dropout: Dropout in the predictor's hidden layers.
        vicreg_smooth: Weight of PLDM's temporal smoothness term (``vicreg`` only).
        idm_weight: Weight of an inverse-dynamics loss (PLDM): recover a_t from
            (z_t, z_{t+1}) with a small MLP (MSE on the action vector).
        sigreg_weighting: ``convex`` = LeJEPA's ``(1 - lambda) pred + lambda SIGReg``;
            ``additive`` = LeWM's ``pred + lambda SIGReg``.
        task_weight: Weight of reward (MSE) and death (BCE) heads on the predicted latents,
            trained with V; 0 = no task signal (every other V).
        task_input: What the task heads read: ``predicted`` (the predicted next latent,
            TD-MPC2) or ``embedding`` (the online embedding of the step's first frame).
    """

    data_view = "windows"

    def __init__(self, latent_dim: int = 32, action_dim: int | None = None,
                 anti_collapse: str = "ema", encoder: nn.Module | None = None,
                 image_size: int = 64, lr: float = 3e-4, weight_decay: float = 1e-4,
                 rollout_steps: int = 1, predictor_hidden: int = 512, predictor_depth: int = 2,
                 ema_momentum: float = 0.996, ema_momentum_end: float = 1.0,
                 vicreg_sim: float = 25.0, vicreg_std: float = 25.0, vicreg_cov: float = 1.0,
                 sigreg_lambda: float = 0.05, sigreg_slices: int = 256,
                 rollout_discount: float = 1.0, context_frames: int = 1,
                 predictor_dropout: float = 0.0, vicreg_smooth: float = 0.0,
                 idm_weight: float = 0.0,
                 sigreg_weighting: Literal["convex", "additive"] = "convex",
                 task_weight: float = 0.0,
                 task_input: Literal["predicted", "embedding"] = "predicted"):
        super().__init__()
        if anti_collapse not in ANTI_COLLAPSE:
            raise UserError(f"JEPAModule.anti_collapse {anti_collapse!r}: choose one of "
                            f"{', '.join(ANTI_COLLAPSE)}")
        if action_dim is None or action_dim < 1:
            raise UserError("JEPAModule.action_dim: not set; train-vision fills it from the "
                            "store, or give the env's action vector size")
        for key, value, ok, accepted in (
                ("rollout_steps", rollout_steps, rollout_steps >= 1, "an integer >= 1"),
                ("context_frames", context_frames, context_frames >= 1, "an integer >= 1"),
                ("rollout_discount", rollout_discount, 0 < rollout_discount <= 1, "in (0, 1]"),
                ("predictor_dropout", predictor_dropout, 0 <= predictor_dropout < 1,
                 "in [0, 1)"),
                ("vicreg_smooth", vicreg_smooth, vicreg_smooth >= 0, ">= 0"),
                ("idm_weight", idm_weight, idm_weight >= 0, ">= 0"),
                ("task_weight", task_weight, task_weight >= 0, ">= 0"),
                ("sigreg_weighting", sigreg_weighting,
                 sigreg_weighting in ("convex", "additive"), "convex or additive"),
                ("task_input", task_input, task_input in ("predicted", "embedding"),
                 "predicted or embedding")):
            if not ok:
                raise UserError(f"JEPAModule.{key} {value!r}: accepted: {accepted}")
        encoder = default_encoder(encoder, image_size)
        self.save_spec(latent_dim=latent_dim, action_dim=action_dim,
                       anti_collapse=anti_collapse, encoder=encoder, image_size=image_size,
                       lr=lr, weight_decay=weight_decay, rollout_steps=rollout_steps,
                       predictor_hidden=predictor_hidden, predictor_depth=predictor_depth,
                       ema_momentum=ema_momentum, ema_momentum_end=ema_momentum_end,
                       vicreg_sim=vicreg_sim, vicreg_std=vicreg_std, vicreg_cov=vicreg_cov,
                       sigreg_lambda=sigreg_lambda, sigreg_slices=sigreg_slices,
                       rollout_discount=rollout_discount, context_frames=context_frames,
                       predictor_dropout=predictor_dropout, vicreg_smooth=vicreg_smooth,
                       idm_weight=idm_weight, sigreg_weighting=sigreg_weighting,
                       task_weight=task_weight, task_input=task_input)
        self.latent_dim, self.anti_collapse = latent_dim, anti_collapse
        self.steps, self.context = rollout_steps, context_frames
        self.window = context_frames - 1 + rollout_steps  # transitions per training window
        head = (nn.Identity() if encoder.out_dim == latent_dim
                else nn.Linear(encoder.out_dim, latent_dim))
        # BatchNorm puts z on a unit scale per dim from step 0: frames of one game look alike,
        # so raw features barely vary and every loss (and SIGReg's gradient) starts near zero
        self.online = nn.Sequential(encoder, head, nn.BatchNorm1d(latent_dim, affine=False))
        self.target = copy.deepcopy(self.online) if anti_collapse == "ema" else None
        if self.target is not None:
            self.target.requires_grad_(False)
        self.predictor = Predictor(latent_dim, action_dim, predictor_hidden, predictor_depth,
                                   context=context_frames, dropout=predictor_dropout)
        # PLDM's inverse dynamics: (z_t, z_{t+1}) -> a_t
        self.idm = (nn.Sequential(nn.Linear(2 * latent_dim, predictor_hidden), nn.GELU(),
                                  nn.Linear(predictor_hidden, action_dim))
                    if idm_weight > 0 else None)
        # TD-MPC2-style task heads on the predicted latent: reward and death of the step
        self.task = nn.Linear(latent_dim, 2) if task_weight > 0 else None
        # the step that ends an episode starts on its last frame, which a window of one
        # transition never starts on: the task heads need those windows to see a death
        self.window_tail = task_weight > 0

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

        With EMA only the context frames need the online net (the rest are targets, no
        grad); otherwise one shared pass serves both.
        """
        b, t1 = obs.shape[:2]
        x, flat = self.to_float(obs.flatten(0, 1)), mask.flatten()
        if self.target is None:
            z = self._on_valid(self.online, x, flat).view(b, t1, -1)
            return z, z
        with torch.no_grad():  # I-JEPA: layer-normed targets, so shrinking z cannot win
            z_tgt = F.layer_norm(self._on_valid(self.target, x, flat), (self.latent_dim,))
        c = self.context
        if c == 1:
            z_ctx = self.online(self.to_float(obs[:, 0]))[:, None]
        else:
            z_ctx = self._on_valid(self.online, self.to_float(obs[:, :c].flatten(0, 1)),
                                   mask[:, :c].flatten()).view(b, c, -1)
        return torch.cat([z_ctx, z_tgt.view(b, t1, -1)[:, c:]], dim=1), \
            z_tgt.view(b, t1, -1)

    def rollout(self, z0: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Roll the predictor open-loop: ``z0`` ``(B, D)`` or the context ``(B, c, D)``
        (oldest first), ``a`` ``(B, k, A)`` -> ``z_pred`` ``(B, k, D)``."""
        preds, ctx = [], z0 if z0.dim() == 3 else z0[:, None]
        for i in range(a.shape[1]):
            z = self.predictor(ctx if self.context > 1 else ctx[:, -1], a[:, i])
            preds.append(z)
            ctx = torch.cat([ctx[:, 1:], z[:, None]], dim=1)
        return torch.stack(preds, dim=1)

    def _step_weights(self, valid: torch.Tensor) -> torch.Tensor:
        """``valid`` ``(B, k)`` times each step's weight ``rollout_discount ** i``."""
        rho = self.args.get("rollout_discount", 1.0)
        if rho == 1.0:
            return valid
        w = rho ** torch.arange(valid.shape[1], dtype=valid.dtype, device=valid.device)
        return valid * w

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Batch of windows: ``obs`` uint8 ``(B, k+1, 3, H, W)``, ``a`` float ``(B, k+1, A)``,
        ``mask`` bool ``(B, k+1)`` -> scalars ``loss``, ``pred`` (k-step prediction MSE),
        ``reg`` (the anti-collapse term), and ``copy`` (MSE of copying the last target
        embedding: the baseline ``pred`` must beat)."""
        c, k, args = self.context, self.steps, self.args
        n_frames = c + k
        obs, mask = batch["obs"][:, :n_frames], batch["mask"][:, :n_frames]
        a = batch["a"][:, c - 1:n_frames - 1].float()  # a_t of each predicted step
        z, z_tgt = self._embed_window(obs, mask)
        z_pred = self.rollout(z[:, :c], a)
        # a transition into frame c + i counts when that frame exists
        valid = self._step_weights(mask[:, c:].float())
        n = valid.sum().clamp(min=1e-12)
        pred = ((z_pred - z_tgt[:, c:]).pow(2).mean(-1) * valid).sum() / n
        with torch.no_grad():
            copy = ((z_tgt[:, c - 1:c] - z_tgt[:, c:]).pow(2).mean(-1) * valid).sum() / n
        out = {"pred": pred, "copy": copy, "reg": pred.new_zeros(())}
        z_all = z[mask]  # (N_valid, D) online embeddings of every real frame
        if self.anti_collapse == "vicreg":
            out["var"], out["cov"] = losses.vicreg_variance(z_all), losses.vicreg_covariance(z_all)
            out["reg"] = args["vicreg_std"] * out["var"] + args["vicreg_cov"] * out["cov"]
            if args.get("vicreg_smooth", 0.0) > 0:  # PLDM: consecutive embeddings stay close
                pair = (mask[:, 1:] & mask[:, :-1]).float()
                out["smooth"] = (((z[:, 1:] - z[:, :-1]).pow(2).mean(-1) * pair).sum()
                                 / pair.sum().clamp(min=1))
                out["reg"] = out["reg"] + args["vicreg_smooth"] * out["smooth"]
            out["loss"] = args["vicreg_sim"] * pred + out["reg"]
        elif self.anti_collapse == "sigreg":
            lam = args["sigreg_lambda"]
            out["reg"] = losses.sigreg(z_all, args["sigreg_slices"], seed=self.global_step)
            if args.get("sigreg_weighting", "convex") == "additive":  # LeWM
                out["loss"] = pred + lam * out["reg"]
            else:  # LeJEPA
                out["loss"] = (1 - lam) * pred + lam * out["reg"]
        else:
            out["loss"] = pred
        if self.idm is not None:  # PLDM's inverse dynamics on the online embeddings
            pair = (mask[:, 1:] & mask[:, :-1]).float()
            a_all = batch["a"][:, :n_frames - 1].float()
            a_hat = self.idm(torch.cat([z[:, :-1], z[:, 1:]], dim=-1))
            out["idm"] = ((a_hat - a_all).pow(2).mean(-1) * pair).sum() / pair.sum().clamp(min=1)
            out["loss"] = out["loss"] + args["idm_weight"] * out["idm"]
        if self.task is not None:  # reward and death of each predicted step, read from
            # its predicted latent or from the embedding of the frame it starts from
            heads = self.task(z_pred if args.get("task_input", "predicted") == "predicted"
                              else z[:, c - 1:n_frames - 1])  # (B, k, 2)
            # a step counts when the frame it starts from exists (the death step's next
            # frame is never stored, but its predicted latent is)
            steps = mask[:, c - 1:n_frames - 1].float()
            r = batch["r"][:, c - 1:n_frames - 1].float()
            done = batch["done"][:, c - 1:n_frames - 1].float()
            m = steps.sum().clamp(min=1)
            out["task_reward"] = ((heads[..., 0] - r).pow(2) * steps).sum() / m
            out["task_done"] = (F.binary_cross_entropy_with_logits(
                heads[..., 1], done, reduction="none") * steps).sum() / m
            out["loss"] = out["loss"] + args["task_weight"] * (out["task_reward"]
                                                               + out["task_done"])
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
