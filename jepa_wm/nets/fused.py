"""The fused dream kernels (``fused_dream.cpp``): built with the machine's C++ compiler on
first use, cached, and loaded as torch ops.

``ops()`` returns ``torch.ops.jepa_wm_fused`` with ``lstm_cell`` and ``sample_mixture``
(``MDNRNN.dream_step`` and ``MDNRNN.cell`` call them) and ``population_linear``
(``ControllerPopulation``). The library is compiled once per source, CPU and torch
build into ``<cache>/kernels/`` (``jepa_wm.io.cache_dir``), for this CPU (``-march=native``:
the cache key holds the CPU's flags, so a copied cache never runs on a CPU it was not built
for). It takes g++ (``$CXX``) and torch's headers, which a pip-installed torch carries; no
ninja, no pybind11. A machine without a compiler gets a one-line error naming it, and the
eager step (``controller_train.kernel: eager``) works everywhere.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from jepa_wm.io import UserError, cache_dir

SOURCE = Path(__file__).with_name("fused_dream.cpp")
#: -ffast-math lets gcc vectorise the loops' sums and min/max; it is given to the compile
#: only: at link time gcc 12 would add crtfastmath.o, which flushes denormals to zero for
#: the whole process (every torch op, not only these kernels). 512-bit vectors: the cell
#: kernel 1.24-1.31 ms against 1.52 at 256 (1,024 x 512, one thread, the AMX Xeon).
COMPILE = ["-O3", "-ffast-math", "-march=native", "-mprefer-vector-width=512", "-fopenmp",
           "-fPIC", "-std=c++20", "-fvisibility=hidden", "-w"]
_loaded: Path | None = None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path() -> Path:
    """Where the built library for this source, CPU, compiler and torch lives."""
    cxx = os.environ.get("CXX", "g++")
    key = hashlib.sha256("\n".join([
        SOURCE.read_text(), _cpu_flags(), torch.__version__, cxx, " ".join(COMPILE),
        str(torch._C._GLIBCXX_USE_CXX11_ABI), sys.platform]).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"jepa_wm_fused_{key}.so"


def build(path: Path) -> None:
    """Compile ``fused_dream.cpp`` into ``path`` (atomically: a concurrent build or a kill
    never leaves a partial library there)."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise UserError(f"controller_train.kernel fused: no C++ compiler {cxx!r} on PATH to "
                        "build the fused dream kernels; accepted: install g++ (or set $CXX), "
                        "or kernel: eager")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"controller_train.kernel fused: cannot write the kernel cache "
                        f"{path.parent} ({e.strerror}); accepted: a writable $JEPA_WM_CACHE, "
                        "or kernel: eager") from e
    tmp = path.with_name(f".{path.stem}.{os.getpid()}")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    root = Path(torch.__file__).parent  # a pip wheel's headers and libraries
    includes = [f"-I{root / 'include'}", f"-I{root / 'include/torch/csrc/api/include'}"]
    libs = [f"-L{root / 'lib'}", f"-Wl,-rpath,{root / 'lib'}", "-lc10", "-ltorch_cpu"]
    steps = [[cxx, *COMPILE, abi, *includes, "-c", str(SOURCE), "-o", f"{tmp}.o"],
             [cxx, "-shared", "-fopenmp", f"{tmp}.o", "-o", f"{tmp}.so", *libs]]
    try:
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines()
                first = next((s for s in lines if "error" in s), lines[0] if lines else "")
                raise UserError(f"controller_train.kernel fused: {cxx} could not build "
                                f"{SOURCE.name}: {first.strip()}; accepted: kernel: eager")
        os.replace(f"{tmp}.so", path)
    finally:
        for leftover in (Path(f"{tmp}.o"), Path(f"{tmp}.so")):
            leftover.unlink(missing_ok=True)


def ops():
    """``torch.ops.jepa_wm_fused``, building the library first if this machine has none."""
    global _loaded
    if _loaded is None:
        path = library_path()
        if not path.exists():
            build(path)
        torch.ops.load_library(str(path))
        _loaded = path
    return torch.ops.jepa_wm_fused
