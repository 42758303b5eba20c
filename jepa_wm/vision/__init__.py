"""Vision models V: every one is a VisionModule with ``latent_dim`` and ``encode``."""

from jepa_wm.vision.base import VisionModule, load_vision
from jepa_wm.vision.jepa import JEPAModule
from jepa_wm.vision.random import RandomModule
from jepa_wm.vision.vae import VAEModule

__all__ = ["JEPAModule", "RandomModule", "VAEModule", "VisionModule", "load_vision"]
