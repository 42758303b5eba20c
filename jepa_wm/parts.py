"""Parts named by ``class_path``/``init_args`` specs: the one place a spec becomes a class
or an object.

Configs, V's and M's checkpoints all hold a part as that plain spec (so a checkpoint loads
with ``weights_only=True``); ``part_class`` checks that the class is the kind a section
accepts, ``build_part`` constructs it, nested parts (an encoder inside a V) first.
Construction is plain ``cls(**init_args)``, so an error a constructor raises reaches the
user unchanged.
"""

from __future__ import annotations

import importlib
from typing import Any

from jepa_wm.io import UserError


def import_class(class_path: str) -> Any:
    """The object ``class_path`` (``package.module.Name``) names; a ``UserError`` if none."""
    module, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"class_path {class_path}: no such class") from None


def part_class(spec: Any, base: type, where: str, what: str, accepted: str) -> type:
    """The class ``spec`` names, checked to be ``base`` or a subclass of it; otherwise a
    ``UserError``: ``<where>: not <what>; accepted: <accepted>``."""
    path = spec.get("class_path") if isinstance(spec, dict) else None
    cls = import_class(path) if path else None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UserError(f"{where}: not {what}; accepted: {accepted}")
    return cls


def build_part(spec: Any, **fill: Any) -> Any:
    """Build a ``{"class_path", "init_args"}`` spec (nested specs first; any other value is
    returned as is). ``fill`` sets init arguments the data decides (sizes), over the spec's."""
    if isinstance(spec, dict) and "class_path" in spec:
        args = {k: build_part(v) for k, v in (spec.get("init_args") or {}).items()}
        return import_class(spec["class_path"])(**{**args, **fill})
    return spec
