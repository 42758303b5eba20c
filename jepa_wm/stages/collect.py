"""``jepa-wm collect --env ID --episodes N --out DIR --seed S [--workers W] [--max_hold K]``:
random episodes of a real env into a rollout store (resumable, byte-reproducible)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from jepa_wm.config import data_hash


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--out", type=str, required=True,
                        help="Rollout store folder (created, resumed or appended to).")
    parser.add_argument("--shard_episodes", type=int, default=32,
                        help="Episodes per shard (kept from the store when it exists).")


def collect_from_config(cfg: Namespace, out: str | Path, shard_episodes: int = 32,
                        policy: Any = None) -> dict[str, Any]:
    """Collect the store ``cfg`` describes into ``out`` (skipped when ``out`` is DONE for
    the same data config); writes ``DONE.json`` last. Returns the store's summary.

    ``policy`` None = ``HoldRandomPolicy`` holding each action 1..``cfg.max_hold`` steps."""
    from jepa_wm.data.collect import collect, print_summary
    from jepa_wm.data.store import RolloutStore
    from jepa_wm.io import is_done, mark_done, read_json

    out = Path(out)
    config_hash = data_hash(cfg)
    if is_done(out, config_hash):
        summary = RolloutStore(out).summary()
        print(f"collect: {out} is complete for this config (hash {config_hash}); nothing to do")
        print_summary(summary)
        return summary
    if (out / "meta.json").exists():  # resume or append: keep the store's shard size
        shard_episodes = read_json(out / "meta.json").get("episodes_per_shard", shard_episodes)
    summary = collect(cfg.env, out, cfg.episodes, seed=cfg.seed, workers=cfg.workers,
                      image_size=cfg.image_size, frame_skip=cfg.frame_skip,
                      max_episode_steps=cfg.max_episode_steps, policy=policy,
                      max_hold=cfg.max_hold, episodes_per_shard=shard_episodes)
    mark_done(out, config_hash, episodes=summary["episodes"], frames=summary["frames"],
              wall_time=summary["wall_time"])
    return summary


def main(cfg: Namespace) -> None:
    collect_from_config(cfg, cfg.out, cfg.shard_episodes)
