"""Vision models V: every one is a VisionModule with ``latent_dim`` and ``encode``."""

from jepa_wm.vision.base import VisionModule

__all__ = ["VisionModule"]
