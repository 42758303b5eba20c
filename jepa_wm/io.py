"""Small file helpers shared by every stage: one-line user errors, atomic writes, hashes,
and the "stage complete" marker that lets a stage be skipped or resumed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """Bad input from the user: the CLI prints it as one line (no traceback) and exits 2.

    The message names the thing at fault and what would be accepted.
    """


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    A kill at any point leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # name the file, not its temp twin
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def cache_dir() -> Path:
    """``$JEPA_WM_CACHE``, else ``$XDG_CACHE_HOME/jepa_wm``, else ``~/.cache/jepa_wm``."""
    if os.environ.get("JEPA_WM_CACHE"):
        return Path(os.environ["JEPA_WM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jepa_wm"


def new_memmap(path: str | os.PathLike, dtype: Any, shape: tuple[int, ...]):
    """A new ``.npy`` file at ``path`` opened as a writable memory map, its disk blocks
    reserved up front: a full disk is then an ``OSError`` (ENOSPC) here, not a SIGBUS (the
    process killed with "Bus error") on the first page written into a hole of a sparse file.
    """
    import numpy as np
    from numpy.lib.format import open_memmap

    arr = open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
    reserve = getattr(os, "posix_fallocate", None)  # Linux, FreeBSD; not macOS
    if reserve is not None:
        try:
            with open(path, "r+b") as f:
                reserve(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system without it
                del arr
                raise
    return arr


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON; a missing or unparsable file is a one-line ``UserError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, streamed (never the whole file in RAM)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_obj(obj: Any, n: int = 12) -> str:
    """Short stable hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def save_checkpoint(path: str | os.PathLike, kind: str, spec: dict, state_dict: dict,
                    **extra: Any) -> None:
    """The one checkpoint format of a trained part (V's and M's ``final.ckpt``): ``kind``
    (``jepa_wm.vision`` or ``jepa_wm.memory``), ``spec`` (``class_path``/``init_args``, plain
    values: what rebuilds the part), ``state_dict`` (tensors on CPU) and ``extra`` plain
    values; written atomically and read back with ``weights_only=True`` (nothing pickled)."""
    import torch

    ckpt = {"kind": kind, "spec": spec,
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, **extra}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_weights(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file.

    A checkpoint whose pickle carries code or arbitrary objects (a function such as
    ``os.system``, a class instance) is refused, never executed; an unreadable file is a
    ``UserError``. A missing file raises ``FileNotFoundError`` (callers name what it is).
    """
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:  # not a pickle torch can read at all (junk, another format)
            raise UserError(f"{path}: not a loadable checkpoint (UnpicklingError)") from None
        raise UserError(f"{path}: refused: the checkpoint holds pickled code or objects "
                        f"({found.group(1)}); accepted: tensors and plain values (loaded "
                        "with weights_only=True)") from None
    except Exception as e:  # a truncated or non-torch file fails in many ways
        first = (str(e).splitlines() or [""])[0][:120]
        raise UserError(f"{path}: not a loadable checkpoint ({type(e).__name__}: "
                        f"{first})") from None


DONE_FILE = "DONE.json"


def is_done(out: str | os.PathLike, config_hash: str) -> bool:
    """True when stage folder ``out`` was completed with the same config hash."""
    marker = Path(out) / DONE_FILE
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("config_hash") == config_hash
    except json.JSONDecodeError:
        return False


def mark_done(out: str | os.PathLike, config_hash: str, **info: Any) -> None:
    """Record that stage folder ``out`` is complete for ``config_hash`` (written last)."""
    write_json(Path(out) / DONE_FILE, {"config_hash": config_hash, **info})


STAGE_FILE = "STAGE.json"


def folder_identity(out: str | os.PathLike) -> str | None:
    """The identity the work in stage folder ``out`` was made under: its ``STAGE.json``
    (written when the stage started), else its ``DONE.json`` hash; None when unknown."""
    for name, key in ((STAGE_FILE, "identity"), (DONE_FILE, "config_hash")):
        try:
            return json.loads((Path(out) / name).read_text())[key]
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, KeyError,
                TypeError):
            continue
    return None


def claim(out: str | os.PathLike, identity: str, stage: str) -> Path | None:
    """Make ``out`` the folder of ``identity`` before stage ``stage`` writes into it.

    Work made under this identity (a killed run's checkpoints) stays, to be resumed. Work
    made under another identity, or of unknown identity, finished or not, is never resumed
    or re-stamped: the folder is moved aside to ``<out>.replaced-<UTC time>`` (nothing is
    deleted) and a fresh one started. Returns where the old work went, or None.
    """
    out = Path(out)
    moved = None
    if out.is_symlink() or (out.is_dir() and any(out.iterdir())):
        old = folder_identity(out)
        if old != identity:
            from datetime import datetime, timezone

            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
            moved = out.with_name(f"{out.name}.replaced-{stamp}")
            os.rename(out, moved)
            print(f"{stage}: {out} held work of another config (identity {old or 'unknown'}, "
                  f"this run {identity}); moved it to {moved.name} and starting afresh")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STAGE_FILE).exists():
        write_json(out / STAGE_FILE, {"stage": stage, "identity": identity})
    return moved
