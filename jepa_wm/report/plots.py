"""The report's PNG plots: scores per variant, CMA-ES curves, V's and M's learning
curves, the temperature table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from jepa_wm.report.runs import SeedRun, flatten, pick


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display; imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lay out, write as PNG and close ``fig``; return ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_scores(rows: list[dict], runs: list[SeedRun], path: Path) -> Path:
    """Real score per variant: mean with its 95% CI, each seed as a dot, dream as a ring."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 4))
    for i, row in enumerate(rows):
        seeds = [r.results["real_mean"] for r in runs if r.variant == row["variant"] and r.ok]
        ax.scatter(np.full(len(seeds), i) + np.linspace(-0.12, 0.12, len(seeds)), seeds,
                   s=14, color="gray", zorder=2, label="seed" if i == 0 else None)
        if math.isfinite(row["real_mean"]):
            err = [[row["real_mean"] - row["ci_low"]], [row["ci_high"] - row["real_mean"]]]
            ax.errorbar(i, row["real_mean"], yerr=err, fmt="o", color="C0", capsize=6,
                        zorder=3, label="real mean, 95% CI" if i == 0 else None)
        if math.isfinite(row["dream_mean"]):
            ax.scatter(i, row["dream_mean"], facecolors="none", edgecolors="C3", s=60,
                       zorder=3, label="dream mean" if i == 0 else None)
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("return")
    ax.set_title("Score per variant")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def history_curves(history: Any) -> tuple[list, list, list, list]:
    """``(generations, dream fitness, check generations, real scores)`` from a
    controller/history.json: a list of per-generation dicts (or ``{"generations": [...]}``)
    with a dream fitness (``mean``/``fitness_mean``/``best``...) and, on check
    generations, a real score (any key starting with ``real``)."""
    if isinstance(history, dict):
        history = history.get("generations", history.get("history", []))
    if not isinstance(history, list):
        return [], [], [], []
    gens, dream, check_gens, real = [], [], [], []
    for i, entry in enumerate(h for h in history if isinstance(h, dict)):
        flat = flatten(entry)
        g = flat.get("generation", i)
        d = pick(flat, ("dream/fitness_mean", "fitness_mean", "mean", "dream/return_mean",
                        "dream_mean", "fitness/mean", "best", "fitness_best"))
        if math.isfinite(d):
            gens.append(g)
            dream.append(d)
        r = pick(flat, ("real/return_mean", "real_mean", "real", "real_check",
                        "real/check_mean"))
        if math.isfinite(r):
            check_gens.append(g)
            real.append(r)
    return gens, dream, check_gens, real


def plot_cmaes(runs: list[SeedRun], path: Path) -> Path | None:
    """CMA-ES dream fitness per generation (one line per seed), real checks as markers."""
    plt = _pyplot()
    variants = sorted({r.variant for r in runs if r.history})
    if not variants:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, variant in enumerate(variants):
        for j, r in enumerate(r for r in runs if r.variant == variant and r.history):
            gens, dream, cg, real = history_curves(r.history)
            ax.plot(gens, dream, color=f"C{i}", alpha=0.8,
                    label=f"{variant} dream (population mean)" if j == 0 else None)
            if real:
                ax.plot(cg, real, "s--", color=f"C{i}", alpha=0.8, markersize=4,
                        label=f"{variant} real check" if j == 0 else None)
    ax.set_xlabel("CMA-ES generation")
    ax.set_ylabel("return")
    ax.set_title("Controller training: dream fitness vs real checks")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


#: The learning curve drawn per part: V's effective rank (RankMe, every V has it) and M's
#: held-out mixture NLL per latent dimension.
LEARNING_CURVES = (("vision", "vision/effective_rank", "V: effective rank of held-out z"),
                   ("memory", "val/gmm_nll", "M: held-out gmm NLL per z dim"))


def plot_learning(runs: list[SeedRun], path: Path) -> Path | None:
    """V's and M's learning curves from their ``validation.json`` (one line per seed,
    one colour per variant), against the training step."""
    plt = _pyplot()
    variants = sorted({r.variant for r in runs if r.curves})
    if not variants:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (part, key, title) in zip(axes, LEARNING_CURVES):
        for i, variant in enumerate(variants):
            first = True
            for r in (r for r in runs if r.variant == variant and r.curves):
                points = [(e["step"], e[key]) for e in r.curves.get(part, [])
                          if isinstance(e, dict) and isinstance(e.get(key), (int, float))]
                if points:
                    ax.plot(*zip(*points), color=f"C{i}", alpha=0.8,
                            label=variant if first else None)
                    first = False
        ax.set_xlabel("training step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_scaling(scaling: list[dict], path: Path, marks: dict[str, float] | None = None
                 ) -> Path | None:
    """Real score against the frames collected (log axis), mean and 95% CI over seeds, one
    line per base variant: the data-scaling curve. ``marks``: label -> score, drawn as
    dashed horizontal lines (e.g. the score that solves the game)."""
    if not scaling:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, variant in enumerate(sorted({r["variant"] for r in scaling})):
        mine = [r for r in scaling if r["variant"] == variant and math.isfinite(r["frames"])]
        x = np.array([r["frames"] for r in mine])
        y = np.array([r["real_mean"] for r in mine])
        err = np.array([[r["real_mean"] - r["ci_low"] for r in mine],
                        [r["ci_high"] - r["real_mean"] for r in mine]])
        ax.errorbar(x * (1 + 0.03 * i), y, yerr=err, fmt="o-", capsize=5, label=variant)
    for label, score in (marks or {}).items():
        ax.axhline(score, color="gray", linestyle="--", linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("frames collected (log)")
    ax.set_ylabel("real return (mean, 95% CI over seeds)")
    ax.set_title("Data scaling")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_taus(taus: list[dict], path: Path) -> Path | None:
    """Dream (and real, when known) score against the dream temperature, per variant."""
    if not taus:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, variant in enumerate(sorted({t["variant"] for t in taus})):
        mine = [t for t in taus if t["variant"] == variant]
        ax.plot([t["tau"] for t in mine], [t["dream_mean"] for t in mine], "o-",
                color=f"C{i}", label=f"{variant} dream")
        if any(math.isfinite(t["real_mean"]) for t in mine):
            ax.plot([t["tau"] for t in mine], [t["real_mean"] for t in mine], "s--",
                    color=f"C{i}", label=f"{variant} real")
    ax.set_xlabel("temperature tau")
    ax.set_ylabel("return")
    ax.set_title("Virtual vs actual score by dream temperature")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
