"""``jepa-wm train-memory --config ... --latents DIR --out DIR [--data STORE]``: train M (the
MDN-RNN) on a latent set; the rollout store comes from the latents' meta.json (``--data``
overrides it). Writes ``final.ckpt``, ``last.ckpt`` (resume), ``metrics.json``,
``DONE.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--latents", type=str, required=True, help="Latent set (encode's out).")
    parser.add_argument("--out", type=str, required=True, help="Output folder for M.")
    parser.add_argument("--data", type=Optional[str], default=None,
                        help="Rollout store of the latents (default: the one their "
                             "meta.json names).")


def upstream_hash(folder: str | Path) -> str:
    """The config hash an upstream stage folder was completed with ('' when unknown)."""
    import json

    marker = Path(folder) / "DONE.json"
    try:
        return json.loads(marker.read_text()).get("config_hash", "")
    except (FileNotFoundError, json.JSONDecodeError):
        return ""


def config_hash(cfg: Namespace) -> str:
    """What M depends on: its keys in the stage table and the latent set."""
    from jepa_wm.contract import identity

    return identity("train-memory", cfg, upstream=upstream_hash(cfg.latents))


def main(cfg: Namespace) -> None:
    from jepa_wm.config import check_train_config
    from jepa_wm.io import is_done, mark_done
    from jepa_wm.memory import memory_inputs, train_memory
    from jepa_wm.tracking import lightning_logger

    check_train_config(cfg.memory_train, "memory_train")
    memory_inputs(cfg.latents, cfg.data)  # a finished folder with mismatched inputs is refused
    h = config_hash(cfg)
    if is_done(cfg.out, h):
        print(f"train-memory: {cfg.out} is complete for this config (hash {h}); nothing to do")
        return
    metrics = train_memory(cfg.memory_model, cfg.memory_train, cfg.seed, cfg.latents, cfg.out,
                           data=cfg.data, config_hash=h,
                           logger=lightning_logger(cfg, "train-memory", cfg.out))
    mark_done(cfg.out, h, wall_time=metrics["wall_time"])
    print(f"train-memory: gmm_nll {metrics['final_gmm_nll']:.3f} reward "
          f"{metrics['final_reward_loss']:.4f} done {metrics['final_done_loss']:.4f}"
          f"{' (untrained)' if metrics['untrained'] else ''} -> {cfg.out}/final.ckpt")
