"""``jepa-wm inspect STORE``: summary and checksum verification of a rollout store."""

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("store", type=str, help="Rollout store folder.")


def main(cfg: Namespace) -> None:
    raise NotImplementedError("inspect lands with the rollout store")
