"""Shared fixtures: a small real VizDoom rollout store, collected once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

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
