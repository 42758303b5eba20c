"""Anti-collapse terms and the EMA target update for the JEPA vision model.

- VICReg (Bardes et al. 2022): keep each dim's std above 1, decorrelate the dims.
- SIGReg (Balestriero & LeCun 2025, LeJEPA): push random 1-D projections of the embeddings
  towards N(0, 1) with the Epps–Pulley characteristic-function statistic.
- EMA target (BYOL / I-JEPA): target <- m * target + (1 - m) * online, m on a cosine ramp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def vicreg_variance(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dim std: ``z`` ``(N, D)`` -> mean over dims of relu(1 - std)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def vicreg_covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances / D: ``z`` ``(N, D)`` -> scalar."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def epps_pulley(x: torch.Tensor, t_max: float = 5.0, n_points: int = 17) -> torch.Tensor:
    """Epps–Pulley statistic of each column of ``x`` ``(N, M)`` against N(0, 1) -> ``(M,)``.

    N * integral over t of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt (trapezoid rule on
    ``n_points`` in [-t_max, t_max]), where ecf is the empirical characteristic function.
    """
    t = torch.linspace(-t_max, t_max, n_points, device=x.device, dtype=x.dtype)
    gauss_cf = torch.exp(-0.5 * t ** 2)
    xt = x.unsqueeze(-1) * t  # (N, M, T)
    re, im = torch.cos(xt).mean(0), torch.sin(xt).mean(0)  # ecf = re + i im, (M, T)
    err = ((re - gauss_cf) ** 2 + im ** 2) * gauss_cf
    return torch.trapezoid(err, t, dim=-1) * x.shape[0]


def random_directions(dim: int, num_slices: int, seed: int, device=None) -> torch.Tensor:
    """``num_slices`` unit vectors in R^dim as columns ``(dim, num_slices)``, from ``seed``."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    a = torch.randn(dim, num_slices, generator=g)
    return (a / a.norm(dim=0, keepdim=True)).to(device)


def sigreg(z: torch.Tensor, num_slices: int = 256, seed: int = 0,
           directions: torch.Tensor | None = None) -> torch.Tensor:
    """LeJEPA's SIGReg: mean Epps–Pulley statistic of random 1-D projections of ``z``.

    ``z`` ``(N, D)``; ``directions`` ``(D, M)`` (default: ``num_slices`` fresh unit vectors
    drawn from ``seed``, e.g. the global step, so each step tests other slices) -> scalar.
    """
    if directions is None:
        directions = random_directions(z.shape[1], num_slices, seed, z.device)
    return epps_pulley(z @ directions.to(z.dtype)).mean()


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Cosine ramp of the EMA momentum from ``start`` (step 0) to ``end`` (``total_steps``)."""
    if total_steps <= 0:
        return start
    progress = min(max(step / total_steps, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: target params <- m * target + (1 - m) * online. Buffers (BatchNorm's
    running statistics) are left to the target's own forward passes: its lagged weights
    give other features than the online net's, which the online net's statistics would
    mis-normalise in eval mode (2026-12-04; training, in batch statistics, is the same)."""
    for p_t, p_o in zip(target.parameters(), online.parameters()):
        p_t.mul_(momentum).add_(p_o.detach(), alpha=1.0 - momentum)
