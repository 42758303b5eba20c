"""Weights & Biases for every stage: offline by default, ``disabled`` in tests.

Every run carries group = variant, job_type = stage, tags = [experiment, sweep] and the
resolved config, so runs compare by group in the W&B UI after ``wandb sync``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from jepa_wm.config import to_dict

MODES = ("offline", "online", "disabled")


def wandb_kwargs(cfg: Namespace, stage: str, out: str | os.PathLike) -> dict[str, Any]:
    """Arguments for ``wandb.init`` (or ``WandbLogger``) of one stage of one run."""
    mode = os.environ.get("WANDB_MODE", cfg.wandb.mode)
    if mode not in MODES:
        from jepa_wm.io import UserError

        raise UserError(f"wandb.mode {mode!r} is not one of {', '.join(MODES)}")
    run_dir = Path(cfg.wandb.dir or out)
    run_dir.mkdir(parents=True, exist_ok=True)
    tags = [t for t in (cfg.experiment, cfg.sweep) if t]
    return dict(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.variant,
        job_type=stage,
        tags=tags,
        name=f"{cfg.experiment}-{cfg.variant}-seed{cfg.seed}-{stage}",
        config=to_dict(cfg),
        mode=mode,
        dir=str(run_dir),
        reinit="finish_previous",
    )


def lightning_logger(cfg: Namespace, stage: str, out: str | os.PathLike):
    """A Lightning ``WandbLogger`` for ``stage``, or ``False`` when W&B is disabled."""
    kwargs = wandb_kwargs(cfg, stage, out)
    if kwargs["mode"] == "disabled":
        return False
    from pytorch_lightning.loggers import WandbLogger

    kwargs.pop("reinit")
    return WandbLogger(save_dir=kwargs.pop("dir"), log_model=False, **kwargs)


def wandb_run(cfg: Namespace, stage: str, out: str | os.PathLike):
    """A ``wandb`` run for a non-Lightning stage (a disabled no-op run in tests)."""
    import wandb

    return wandb.init(**wandb_kwargs(cfg, stage, out))
