"""jepa_wm: World Models (Ha & Schmidhuber 2018) with a swappable V.

V is either Ha's pixel-reconstruction ConvVAE or a JEPA-style joint-embedding encoder with
a latent predictor; M (MDN-RNN) and C (linear controller trained by CMA-ES in M's dream)
stay the same, so the two can be compared on dream-to-real transfer.
"""

__version__ = "0.1.0"
