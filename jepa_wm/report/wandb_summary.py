"""The report's W&B summary run: the table, the plots and the dream videos."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jepa_wm.report.runs import SeedRun
from jepa_wm.report.tables import budget_line


def log_wandb(rows: list[dict], runs: list[SeedRun], root: Path, out: Path,
              images: Sequence[Path], videos: Sequence[Path], sweep: str | None,
              baseline: str) -> Path | None:
    """A W&B summary run (group ``report``, job_type ``report``) with the table, the plots
    and the dream videos; returns its run folder, or None when W&B is disabled."""
    from jsonargparse import Namespace

    from jepa_wm.tracking import wandb_kwargs

    cfg = next((r.config for r in runs if r.config), {}) or {}
    wb = {"mode": "offline", "project": "jepa_wm", "entity": None, "dir": None,
          **(cfg.get("wandb") or {})}
    ns = Namespace(wandb=Namespace(**wb), experiment=cfg.get("experiment", root.name),
                   sweep=sweep or cfg.get("sweep"), variant="report", seed=0)
    kwargs = wandb_kwargs(ns, "report", out)
    if kwargs["mode"] == "disabled":
        return None
    import wandb

    kwargs.update(name=f"{ns.experiment}-report", group="report",
                  config={"experiment": ns.experiment, "baseline": baseline,
                          "variants": [r["variant"] for r in rows], "budget": budget_line(runs)})
    run = wandb.init(**kwargs)
    try:
        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[_wandb_value(r[c]) for c in columns]
                                                   for r in rows])
        payload: dict[str, Any] = {"results": table}
        payload.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in images})
        payload.update({f"dreams/{p.stem}": wandb.Video(str(p), format="gif") for p in videos})
        run.log(payload)
        for row in rows:
            run.summary[f"{row['variant']}/real_mean"] = _wandb_value(row["real_mean"])
        folder = Path(run.dir).parent
    finally:
        run.finish()
    return folder


def _wandb_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
