"""The JEPA latent predictor: the next frame's embedding from the last ones and the action."""

from __future__ import annotations

import torch
from torch import nn


class Predictor(nn.Module):
    """An MLP on ``[z_{t-c+1}, ..., z_t, a_t]`` that predicts the change of ``z_t`` (a
    residual, so that "nothing moves" is the easy default and the net spends its capacity on
    what the action does).

    Args:
        latent_dim: Size of z.
        action_dim: Size of the action vector (one-hot for Discrete actions).
        hidden: Width of the hidden layers.
        depth: Number of hidden layers.
        context: Embeddings it sees (1 = the last frame only; DINO-WM uses 3 frames).
        dropout: Dropout after each hidden layer (LeWM's predictor uses 0.1).
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden: int = 512, depth: int = 2,
                 context: int = 1, dropout: float = 0.0):
        super().__init__()
        self.context = context
        layers, width = [], latent_dim * context + action_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, latent_dim))

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, latent_dim)`` (context 1) or ``(B, context, latent_dim)`` (oldest
        first), ``a`` float ``(B, action_dim)`` -> the next ``z`` ``(B, latent_dim)``."""
        if z.dim() == 2:
            z = z[:, None]
        return z[:, -1] + self.net(torch.cat([z.flatten(1), a], dim=-1))
