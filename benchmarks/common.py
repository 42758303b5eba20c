"""What the benchmarks share: the CPU and the machine's load recorded beside every figure,
and the timer of training steps."""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

RESULTS = Path(__file__).parent / "results"


def results_path(name: str, quick: bool, out: str | Path | None = None) -> Path:
    """Where a benchmark writes: ``out`` when given, else ``results/<name>.md``, and for a
    ``--quick`` run ``results/<name>_quick.md``: a smoke check never overwrites the
    recorded figures."""
    if out is not None:
        return Path(out)
    return RESULTS / f"{name}{'_quick' if quick else ''}.md"


def append_record(out: Path, title: str, intro: str, script: str, context: str,
                  table: str) -> None:
    """Append one dated section to a results file that collects every run of ``script``
    (``out`` starts with ``title`` and ``intro`` when new): the command as typed, then
    ``context`` (machine, load, settings) and the markdown ``table``."""
    import sys
    from datetime import datetime, timezone

    if not out.exists():
        out.write_text(f"# {title}\n\n{intro}\n")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = f"python benchmarks/{script} " + " ".join(
        a.replace(f"{Path.cwd().parent}/", "") for a in sys.argv[1:])
    with out.open("a") as f:
        f.write(f"\n## {when}\n\n`{command}`: {context}\n\n{table}\n")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other jobs sharing the cores slow every figure)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo when it is there."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class StepTimer(pl.Callback):
    """Wall time of each optimiser step after ``warmup`` steps (data loading excluded).

    ``counts(batch) -> {name: n}`` says what a batch holds (frames, sequences, ...); the
    timed steps' counts are summed in ``self.counts``, their number in ``self.steps``.
    """

    def __init__(self, warmup: int, counts: Callable[[Any], dict[str, int]]):
        self.warmup, self.count_batch = warmup, counts
        self.seconds, self.steps, self.counts = 0.0, 0, Counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step <= self.warmup:
            return
        self.seconds += time.perf_counter() - self._t0
        self.steps += 1
        self.counts.update(self.count_batch(batch))
