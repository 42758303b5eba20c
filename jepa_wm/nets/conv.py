"""The conv encoder and decoder of Ha & Schmidhuber's ConvVAE (World Models, 2018).

Encoder: 64x64x3 -> four conv layers (32/64/128/256 channels, kernel 4, stride 2, ReLU)
-> a flat 2*2*256 = 1024 feature. Decoder: dense -> 1024 -> four transposed convs
(128/64/32/3 channels, kernels 5/5/6/6, stride 2) -> sigmoid pixels in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn


class ConvEncoder(nn.Module):
    """Ha's conv trunk: float frames in [0, 1] ``(B, C, H, W)`` -> features ``(B, out_dim)``.

    Args:
        in_channels: Image channels.
        image_size: Frame height and width (the paper: 64); sets ``out_dim``.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64):
        super().__init__()
        self.spec = {"class_path": "jepa_wm.nets.ConvEncoder",
                     "init_args": {"in_channels": in_channels, "image_size": image_size}}
        layers, c = [], in_channels
        for width in (32, 64, 128, 256):
            layers += [nn.Conv2d(c, width, kernel_size=4, stride=2), nn.ReLU()]
            c = width
        self.net = nn.Sequential(*layers, nn.Flatten())
        for m in self.net:  # He init keeps the feature scale through the ReLUs (a random,
            if isinstance(m, nn.Conv2d):  # untrained trunk then gives usable features too)
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # 64x64 -> 256 x 2 x 2 = 1024; other sizes follow the arithmetic
            self.out_dim = self.net(torch.zeros(1, in_channels, image_size, image_size)).shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float ``(B, C, H, W)`` in [0, 1] -> ``(B, out_dim)``."""
        return self.net(x)


class ConvDecoder(nn.Module):
    """Ha's deconv decoder: ``z`` ``(B, latent_dim)`` -> pixels ``(B, 3, 64, 64)`` in [0, 1].

    Args:
        latent_dim: Size of z.
        out_channels: Image channels.
    """

    def __init__(self, latent_dim: int, out_channels: int = 3):
        super().__init__()
        self.fc = nn.Linear(latent_dim, 1024)
        # 1x1 -> 5 -> 13 -> 30 -> 64 (kernel 5/5/6/6, stride 2, no padding)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(1024, 128, kernel_size=5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(128, 64, kernel_size=5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, kernel_size=6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, kernel_size=6, stride=2), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, latent_dim)`` -> ``(B, out_channels, 64, 64)`` in [0, 1]."""
        # The first transposed conv sees a 1x1 input, so it is a plain matmul onto its
        # 128x5x5 output: computed as one, it costs ~40% of that layer's conv time
        # (benchmarks/results/profile.md). Same weights and state dict as the conv.
        first = self.net[0]
        h = self.fc(z) @ first.weight.flatten(1)
        h = h.view(z.shape[0], *first.weight.shape[1:]) + first.bias[:, None, None]
        return self.net[1:](h)
