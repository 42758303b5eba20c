"""``jepa-wm train-vision --config EXPERIMENT --config VARIANT --data STORE --out DIR``."""

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--data", type=str, required=True, help="Rollout store folder.")
    parser.add_argument("--out", type=str, required=True,
                        help="Output folder (checkpoints, metrics.json).")


def main(cfg: Namespace) -> None:
    from jepa_wm.vision.train import train_vision

    train_vision(cfg, cfg.data, cfg.out)
