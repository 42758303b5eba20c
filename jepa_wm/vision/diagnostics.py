"""Collapse diagnostics of a latent batch, the same for every V.

RankMe (Garrido et al. 2023): the effective rank exp(H(p)) of the normalised singular
values p of the (centred) embedding matrix; a collapsed V has rank near 1 and many dead dims.
We centre first so that a large shared offset (e.g. ReLU features) does not pass for one
dominant direction: the rank then measures how many directions the *variation* uses.
"""

from __future__ import annotations

import torch

DEAD_STD = 0.01


def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of ``z`` ``(N, D)``: exp of the entropy of the normalised singular values of
    the centred ``z`` (1 = all variation along one direction, D = isotropic)."""
    z = z.double()
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def latent_stats(z: torch.Tensor, dead_std: float = DEAD_STD) -> dict[str, float]:
    """Collapse diagnostics of ``z`` ``(N, D)``: effective rank, per-dim std min/mean and the
    fraction of dims whose std is below ``dead_std``."""
    z = z.detach().float().cpu()
    std = z.std(dim=0, unbiased=False)
    return {
        "effective_rank": effective_rank(z),
        "std_min": float(std.min()),
        "std_mean": float(std.mean()),
        "dead_fraction": float((std < dead_std).float().mean()),
    }


def is_collapsed(stats: dict[str, float], dead_fraction: float = 0.5,
                 min_rank: float = 1.5) -> bool:
    """The collapse alarm: most dims dead, or the effective rank near 1."""
    return stats["dead_fraction"] > dead_fraction or stats["effective_rank"] < min_rank
