"""jepa_wm: World Models (Ha & Schmidhuber 2018) with a swappable V.

V is either Ha's pixel-reconstruction ConvVAE or a JEPA-style joint-embedding encoder with
a latent predictor; M (MDN-RNN) and C (linear controller trained by CMA-ES in M's dream)
stay the same, so the two can be compared on dream-to-real transfer.
"""

import os

# torch's OpenMP threads (libgomp) spin for ~300,000 iterations before they sleep while
# waiting for work. Alone on the cores that is fastest; beside any other job the spinning
# threads take the cores from it and from each other: the solving budget's M trained 22x
# slower (0.1 against 2.9 steps/s beside a running experiment on 2 cores). A spin of
# 10,000 costs nothing alone (M 2.9 steps/s, a CMA-ES generation 10.7 against 10.5 s)
# and keeps most of the speed under load (M 0.8 steps/s, the generation 29 against 75 s);
# OMP_WAIT_POLICY=PASSIVE made M 1.5x slower alone (benchmarks/results/speed.md). Set
# only when the user set neither, and only if torch is imported after jepa_wm (libgomp
# reads it once, when it loads).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

__version__ = "0.1.0"
