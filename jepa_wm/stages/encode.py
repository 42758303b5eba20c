"""``jepa-wm encode --vision CKPT --data STORE --out DIR``."""

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--vision", type=str, required=True,
                        help="Vision checkpoint (final.ckpt of train-vision).")
    parser.add_argument("--data", type=str, required=True, help="Rollout store folder.")
    parser.add_argument("--out", type=str, required=True, help="Latents output folder.")


def main(cfg: Namespace) -> None:
    import torch

    from jepa_wm.vision.encode import encode_store

    if cfg.vision_train.threads:
        torch.set_num_threads(cfg.vision_train.threads)
    encode_store(cfg.vision, cfg.data, cfg.out, batch_size=max(cfg.vision_train.batch_size, 256))
