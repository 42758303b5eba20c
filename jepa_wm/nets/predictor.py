"""The JEPA latent predictor: the next frame's embedding from this one's and the action."""

from __future__ import annotations

import torch
from torch import nn


class Predictor(nn.Module):
    """An MLP on ``[z, a]`` that predicts the change of ``z`` (a residual, so that "nothing
    moves" is the easy default and the net spends its capacity on what the action does).

    Args:
        latent_dim: Size of z.
        action_dim: Size of the action vector (one-hot for Discrete actions).
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden: int = 512, depth: int = 2):
        super().__init__()
        layers, width = [], latent_dim + action_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, latent_dim))

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, latent_dim)``, ``a`` float ``(B, action_dim)`` -> ``(B, latent_dim)``."""
        return z + self.net(torch.cat([z, a], dim=-1))
