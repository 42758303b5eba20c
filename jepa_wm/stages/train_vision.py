"""``jepa-wm train-vision --config EXPERIMENT --config VARIANT --data STORE --out DIR``."""

from pathlib import Path

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--data", type=str, required=True, help="Rollout store folder.")
    parser.add_argument("--out", type=str, required=True,
                        help="Output folder (checkpoints, metrics.json).")


def main(cfg: Namespace) -> None:
    from jepa_wm.io import is_done
    from jepa_wm.tracking import lightning_logger
    from jepa_wm.vision.train import open_training, train_vision

    store, spec, h = open_training(cfg, cfg.data, cfg.out)
    if is_done(cfg.out, h) and (Path(cfg.out) / "final.ckpt").exists():
        print(f"train-vision: {cfg.out} is done for this config; skipping")
        return
    train_vision(spec, cfg.vision_train, cfg.seed, store, cfg.out, config_hash=h,
                 logger=lightning_logger(cfg, "train-vision", cfg.out))
