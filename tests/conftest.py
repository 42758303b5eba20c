"""Shared fixtures: a small real VizDoom rollout store, collected once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

#: What one suite run needs free in its temporary folder, with a margin: its folders peaked
#: at 1.36 GB (sampled every 5 s through a fresh-clone `bash .ci/run` on 2026-12-05 at
#: dc24786; passing tests' folders are removed as they pass, 4.2 GB in all before that).
#: With less free the run fails halfway, in torch.save or a memmap, with errors that do not
#: say why (the CI run of 2026-12-04 did).
TMP_NEEDED = 2.5e9


def pytest_sessionstart(session):
    """Refuse to start, in one line, when the temporary folder's disk cannot hold a run."""
    import shutil
    import tempfile

    where = Path(session.config.option.basetemp or tempfile.gettempdir()).absolute()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < TMP_NEEDED:
        pytest.exit(f"{where}: {free / 1e9:.1f} GB free; the test suite needs "
                    f"{TMP_NEEDED / 1e9:.1f} GB there for its stores and checkpoints: free some, "
                    "or give --basetemp a folder on a larger disk", returncode=1)


#: What ``doom_store`` holds (other tests may rely on these numbers).
DOOM_STORE_EPISODES = 4
DOOM_STORE_SEED = 0


@pytest.fixture(scope="session")
def doom_store(tmp_path_factory) -> Path:
    """Path of a real ``VizdoomTakeCover-v1`` rollout store: 4 random episodes (about
    800-1000 frames), 64x64 frames, seed 0, 2 episodes per shard (so 2 shards), collected
    through ``jepa_wm.data.collect.collect`` with 1 worker. Open it with
    ``jepa_wm.data.RolloutStore(doom_store)``; treat it as read-only (copy it to modify)."""
    from jepa_wm.data.collect import collect

    out = tmp_path_factory.mktemp("doom") / "rollouts"
    collect("VizdoomTakeCover-v1", out, episodes=DOOM_STORE_EPISODES, seed=DOOM_STORE_SEED,
            workers=1, image_size=64, episodes_per_shard=2, progress=False)
    return out


def write_test_latents(store, out: Path, sigma: bool, seed: int = 0):
    """A ``LatentSet`` of z ``(N, 4)`` for every frame of the ``RolloutStore`` ``store``,
    written to ``out``: a smooth function of the frame index (so M has something to
    predict), with a posterior sigma when asked (dim 3 as wide as the prior)."""
    from jepa_wm.data.latents import LatentSet, write_latents

    n = store.num_frames
    rng = np.random.default_rng(seed)
    z = np.sin(np.arange(n)[:, None] / np.array([5.0, 11.0, 17.0, 29.0])).astype(np.float32)
    z += 0.05 * rng.standard_normal(z.shape).astype(np.float32)
    s = np.full_like(z, 0.2)
    s[:, 3] = 1.0  # an uninformative dim: its posterior is as wide as the prior
    batches = [(z[i:i + 500], s[i:i + 500]) if sigma else z[i:i + 500]
               for i in range(0, n, 500)]
    write_latents(out, n, 4, batches, meta={"vision_sha256": "test", "store": str(store.root)})
    return LatentSet(out)
