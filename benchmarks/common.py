"""What every benchmark records beside its figures: the CPU and the machine's load."""

from __future__ import annotations

import platform
from pathlib import Path


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other jobs sharing the cores slow every figure)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo when it is there."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
