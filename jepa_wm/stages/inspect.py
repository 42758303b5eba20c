"""``jepa-wm inspect STORE``: summary and checksum verification of a rollout store."""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("store", type=str, help="Rollout store folder.")


def main(cfg: Namespace) -> None:
    """Print the store's summary, then check every shard file's sha256 (a mismatch is a
    one-line error naming the file; the CLI exits non-zero)."""
    from rich.console import Console
    from rich.progress import Progress

    from jepa_wm.data.collect import print_summary
    from jepa_wm.data.store import RolloutStore

    store = RolloutStore(cfg.store)
    print_summary(store.summary(), Console())
    shards = len(store.meta["shards"])
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("verify", total=shards)
        store.verify(progress=lambda i: bar.update(task, completed=i + 1))
    print(f"verified: {shards} shards, every sha256 matches meta.json")
