"""``report``: one honest table over variants x seeds of an experiment.

Reads only the JSON files the stages leave behind (``runs``), computes the statistics
(``stats``), writes the tables (``tables``), plots (``plots``), a dream GIF per variant
(``jepa_wm.dream_gif``) and a W&B summary run (``wandb_summary``).
"""

from __future__ import annotations

import os
from pathlib import Path

from jepa_wm.report.plots import (
    history_curves,
    plot_cmaes,
    plot_learning,
    plot_scaling,
    plot_scores,
    plot_taus,
)
from jepa_wm.report.runs import STAGES, SeedRun, find_runs, pick, wall_times
from jepa_wm.report.stats import (
    bootstrap_ci,
    iqm,
    p_improvement,
    scaling_rows,
    summarize,
    tau_table,
)
from jepa_wm.report.tables import (
    budget_line,
    completeness_note,
    markdown_table,
    print_table,
    train_length,
    write_csv,
    write_markdown,
)
from jepa_wm.report.wandb_summary import log_wandb

__all__ = ["STAGES", "SeedRun", "bootstrap_ci", "budget_line", "completeness_note",
           "find_runs", "history_curves", "iqm", "markdown_table", "p_improvement", "pick",
           "plot_cmaes", "plot_learning", "plot_scaling", "plot_scores", "plot_taus",
           "print_table", "scaling_rows", "summarize", "tau_table",
           "train_length", "wall_times", "write_csv", "write_markdown", "write_report"]


def write_report(root: str | os.PathLike, baseline: str = "vae", sweep: str | None = None,
                 gifs: bool = True, quiet: bool = False) -> list[dict]:
    """Write ``root/report/`` (results.csv, results.md, plots, dream GIFs), print the
    table and log the W&B summary run; return the rows."""
    root = Path(root)
    runs = find_runs(root)
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs, baseline)
    taus = tau_table(runs)
    scaling = scaling_rows(rows, runs)
    write_csv(rows, out / "results.csv")
    if taus:
        write_csv(taus, out / "tau.csv")
    images = [p for p in (plot_scores(rows, runs, out / "scores.png"),
                          plot_cmaes(runs, out / "cmaes.png"),
                          plot_learning(runs, out / "learning.png"),
                          plot_taus(taus, out / "tau.png"),
                          plot_scaling(scaling, out / "scaling.png")) if p]
    if gifs:
        from jepa_wm.dream_gif import dream_gifs

        videos = dream_gifs(runs, out)
    else:
        videos = []
    write_markdown(rows, taus, runs, baseline, out / "results.md", [*images, *videos],
                   scaling)
    if not quiet:
        print_table(rows, f"{root.name}: real-env return over seeds (baseline {baseline})")
        print(budget_line(runs))
    log_wandb(rows, runs, root, out, images, videos, sweep, baseline)
    print(f"report: {out / 'results.md'}")
    return rows
