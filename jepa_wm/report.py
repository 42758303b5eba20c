"""``report``: one honest table over variants x seeds of an experiment.

Per variant: mean real score over seeds with a 95% bootstrap CI (scipy, percentile method,
fixed random state), the interquartile mean of all real episodes, the dream score and the
dream-real gap, and the probability of improvement over a baseline variant (rliable's
definition: P(a random seed of the variant beats a random seed of the baseline), ties
count 1/2). Reads only the JSON files the stages leave behind, never the stages' code.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jepa_wm.contract import STAGE_ORDER, stage_folder
from jepa_wm.io import UserError

if TYPE_CHECKING:
    import torch

STAGES = STAGE_ORDER  # the report's wall-time columns
#: results.json ``fidelity`` figures shown per variant (mean over seeds).
FIDELITY_KEYS = ("death_sum_per_episode", "brier", "policy_survival_dream",
                 "policy_survival_real", "policy_survival_ratio", "open_loop_mse_10",
                 "copy_mse_10", "open_loop_mse_50", "copy_mse_50")
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
RANDOM_STATE = 0
SEED_DIR = re.compile(r"^seed(\d+)$")

# Where each diagnostic may sit in the stage's metrics.json (flattened with "/"), in order.
V_LOSS_KEYS = ("final_loss", "final/loss", "train/loss", "loss", "val/loss")
M_LOSS_KEYS = ("final_loss", "final/loss", "train/loss", "loss", "val/loss")
RANK_KEYS = ("effective_rank", "vision/effective_rank", "final_effective_rank",
             "final/effective_rank")


# -- reading -------------------------------------------------------------------------------


def _read(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


@dataclass
class SeedRun:
    """Everything one variant+seed run left behind (None where a file is missing)."""

    variant: str
    seed: int
    folder: Path
    results: dict | None = None
    vision: dict | None = None
    memory: dict | None = None
    history: Any = None
    failed: dict | None = None
    pipeline: dict | None = None
    config: dict | None = None

    @property
    def ok(self) -> bool:
        return self.results is not None and self.failed is None


def find_runs(root: str | os.PathLike) -> list[SeedRun]:
    """Every ``<variant>/seed<k>/`` folder under the experiment folder ``root``."""
    import yaml

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: experiment folder not found; give RUNS/<experiment>")
    runs = []
    for variant_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for seed_dir in sorted(variant_dir.iterdir()):
            m = SEED_DIR.match(seed_dir.name)
            if not (m and seed_dir.is_dir()):
                continue
            config = None
            if (seed_dir / "config.yaml").exists():
                config = yaml.safe_load((seed_dir / "config.yaml").read_text())
            runs.append(SeedRun(
                variant=variant_dir.name, seed=int(m.group(1)), folder=seed_dir,
                results=_read(stage_folder(seed_dir, "evaluate") / "results.json"),
                vision=_read(stage_folder(seed_dir, "train-vision") / "metrics.json"),
                memory=_read(stage_folder(seed_dir, "train-memory") / "metrics.json"),
                history=_read(stage_folder(seed_dir, "train-controller") / "history.json"),
                failed=_read(seed_dir / "FAILED.json"),
                pipeline=_read(seed_dir / "pipeline.json"), config=config))
    if not runs:
        raise UserError(f"{root}: no <variant>/seed<k> run folders; run `jepa-wm run` or "
                        "`jepa-wm sweep` first")
    return runs


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def pick(metrics: dict | None, keys: Sequence[str]) -> float:
    """The first numeric value found under one of ``keys`` (nested dicts flattened with
    ``/``), else NaN."""
    flat = _flatten(metrics or {})
    for key in keys:
        value = flat.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def wall_times(run: SeedRun) -> dict[str, float]:
    """Seconds per stage: the pipeline's record first, else what results.json says."""
    out = {}
    stages = (run.pipeline or {}).get("stages", {})
    from_results = (run.results or {}).get("wall_time") or {}
    for stage in STAGES:
        value = stages.get(stage, {}).get("wall_time")
        if value is None and isinstance(from_results, dict):
            value = from_results.get(stage, from_results.get(stage.replace("-", "_")))
        out[stage] = float(value) if isinstance(value, (int, float)) else math.nan
    return out


# -- statistics ----------------------------------------------------------------------------


def bootstrap_ci(x: Sequence[float], confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, random_state: int = RANDOM_STATE
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``x``; with one value, the value itself."""
    from scipy.stats import bootstrap

    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                    method="percentile", random_state=random_state)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def iqm(scores: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    from scipy.stats import trim_mean

    scores = np.asarray(scores, dtype=float)
    return float(trim_mean(scores, 0.25)) if len(scores) else math.nan


def p_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) + P(X = Y) / 2 for X a random entry of ``x`` and Y of ``y`` (rliable)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return math.nan
    diff = x[:, None] - y[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def summarize(runs: list[SeedRun], baseline: str = "vae") -> list[dict[str, Any]]:
    """One row per variant (baseline first, then by name); see the module docstring."""
    variants = sorted({r.variant for r in runs}, key=lambda v: (v != baseline, v))
    seed_means = {v: [float(r.results["real_mean"]) for r in runs
                      if r.variant == v and r.ok] for v in variants}
    rows = []
    for variant in variants:
        mine = [r for r in runs if r.variant == variant]
        ok = [r for r in mine if r.ok]
        means = seed_means[variant]
        episodes = [float(s) for r in ok for s in r.results.get("real_scores", [])]
        low, high = bootstrap_ci(means)
        gaps = [r.results.get("dream_real_gap", r.results.get("dream_mean", math.nan)
                              - r.results["real_mean"]) for r in ok]
        row = {
            "variant": variant,
            "n_seeds": len(ok),
            "seeds": " ".join(str(r.seed) for r in ok),
            "real_mean": _mean(means),
            "real_std": float(np.std(means, ddof=1)) if len(means) > 1 else math.nan,
            "ci_low": low,
            "ci_high": high,
            "iqm": iqm(episodes),
            "real_episodes": len(episodes),
            "dream_mean": _mean([r.results.get("dream_mean", math.nan) for r in ok]),
            "dream_real_gap": _mean(gaps),
            "p_improvement": (p_improvement(means, seed_means[baseline])
                              if baseline in seed_means else math.nan),
            "v_loss": _mean([pick(r.vision, V_LOSS_KEYS) for r in ok]),
            "m_loss": _mean([pick(r.memory, M_LOSS_KEYS) for r in ok]),
            "effective_rank": _mean([pick(r.vision, RANK_KEYS) for r in ok]),
        }
        for key in FIDELITY_KEYS:
            row[f"fidelity_{key}"] = _mean([(r.results.get("fidelity") or {}).get(key, math.nan)
                                            for r in ok])
        times = [wall_times(r) for r in ok]
        for stage in STAGES:
            row[f"wall_{stage.replace('-', '_')}_s"] = _mean([t[stage] for t in times])
        row["failed_seeds"] = " ".join(str(r.seed) for r in mine if r.failed is not None)
        row["incomplete_seeds"] = " ".join(str(r.seed) for r in mine
                                           if r.failed is None and r.results is None)
        rows.append(row)
    return rows


def tau_table(runs: list[SeedRun]) -> list[dict[str, Any]]:
    """Rows ``variant, tau, dream_mean, real_mean, n_seeds`` from results.json temperature
    entries (``taus``/``tau_table``: a list of ``{tau, dream_mean, ...}`` or a mapping
    tau -> score or -> dict), averaged over seeds. Empty when no run has one."""
    acc: dict[tuple[str, float], dict[str, list]] = {}
    for r in (r for r in runs if r.ok):
        entries = r.results.get("tau_table", r.results.get("taus"))
        if isinstance(entries, dict):
            entries = [{"tau": k, **(v if isinstance(v, dict) else {"dream_mean": v})}
                       for k, v in entries.items()]
        for e in entries if isinstance(entries, list) else []:
            if not isinstance(e, dict) or "tau" not in e:
                continue
            slot = acc.setdefault((r.variant, float(e["tau"])), {"dream": [], "real": []})
            slot["dream"].append(e.get("dream_mean", math.nan))
            slot["real"].append(e.get("real_mean", math.nan))
    return [{"variant": v, "tau": t, "dream_mean": _mean(s["dream"]),
             "real_mean": _mean(s["real"]), "n_seeds": len(s["dream"])}
            for (v, t), s in sorted(acc.items())]


def train_length(section: dict) -> str:
    """A training section's length: ``N steps`` when max_steps is set, else ``N epochs``."""
    steps = section.get("max_steps", -1)
    return f"{steps} steps" if steps and steps > 0 else f"{section.get('max_epochs')} epochs"


def budget_line(runs: list[SeedRun]) -> str:
    """The budget every variant got, from the first resolved config found."""
    cfg = next((r.config for r in runs if r.config), None)
    seeds = sorted({r.seed for r in runs})
    if not cfg:
        return f"Budget: unknown (no config.yaml found); seeds {seeds}."

    c, e = cfg.get("controller_train", {}), cfg.get("evaluate", {})
    return (f"Budget per run: {cfg.get('env')}: {cfg.get('episodes')} episodes collected; "
            f"V {train_length(cfg.get('vision_train', {}))}; "
            f"M {train_length(cfg.get('memory_train', {}))}; "
            f"CMA-ES {c.get('generations')} generations x {c.get('popsize')} candidates x "
            f"{c.get('rollouts')} rollouts in the {c.get('where')} (tau {c.get('tau')}); "
            f"evaluation {e.get('episodes')} real episodes and {e.get('dream_episodes')} "
            f"dreams; seeds {', '.join(map(str, seeds))}.")


# -- writing -------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value) if value != "" else "-"


def write_csv(rows: list[dict], path: Path) -> None:
    """All columns, full precision; missing values are empty cells."""
    from jepa_wm.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v)
                                 else f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})


MAIN_COLUMNS = [("variant", "variant", 0), ("n_seeds", "seeds", 0),
                ("real_mean", "real mean", 1), ("real_std", "std (seeds)", 1),
                ("ci", "95% CI", 1), ("iqm", "IQM (episodes)", 1), ("dream_mean", "dream", 1),
                ("dream_real_gap", "dream-real gap", 1), ("p_improvement", "P(> baseline)", 2),
                ("failed_seeds", "failed", 0)]
DIAG_COLUMNS = [("variant", "variant", 0), ("v_loss", "V loss", 4), ("m_loss", "M loss", 4),
                ("effective_rank", "eff. rank", 2)] + [
                (f"wall_{s.replace('-', '_')}_s", f"{s} s", 1) for s in STAGES]
FIDELITY_NOTE = ("Held-out episodes M never trained on: Σ p(done) per episode (a calibrated "
                 "head gives the observed deaths, ~1), the data policy's mean survival in the "
                 "dream and in the game (a faithful dream: ratio 1), open-loop latent MSE at "
                 "10 and 50 steps against copying the last z (standardised units).")
FIDELITY_COLUMNS = [("variant", "variant", 0),
                    ("fidelity_death_sum_per_episode", "Σ p(done)/episode", 2),
                    ("fidelity_brier", "Brier", 5),
                    ("fidelity_policy_survival_dream", "policy survival: dream", 0),
                    ("fidelity_policy_survival_real", "game", 0),
                    ("fidelity_policy_survival_ratio", "ratio", 2),
                    ("fidelity_open_loop_mse_10", "open-loop MSE@10", 3),
                    ("fidelity_copy_mse_10", "copy@10", 3),
                    ("fidelity_open_loop_mse_50", "open-loop MSE@50", 3),
                    ("fidelity_copy_mse_50", "copy@50", 3)]


def _cell(row: dict, key: str, digits: int) -> str:
    if key == "ci":
        return f"[{_fmt(row['ci_low'], digits)}, {_fmt(row['ci_high'], digits)}]"
    return _fmt(row[key], digits)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r, k, d) for k, _, d in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def completeness_note(rows: list[dict]) -> str | None:
    """A warning when the variants did not all finish the same seeds (a failed, killed or
    missing cell): their CIs and P(> baseline) then compare unequal sets. None when equal."""
    finished = {r["variant"]: r["seeds"] for r in rows}
    if len(set(finished.values())) <= 1 and not any(
            r.get("failed_seeds") or r.get("incomplete_seeds") for r in rows):
        return None
    per = "; ".join(f"`{v}` seeds {s or 'none'}" for v, s in finished.items())
    return (f"**Incomplete comparison**: the variants finished different seeds ({per}), so "
            "the CIs and P(> baseline) compare unequal sets; run the sweep again to finish "
            "the missing cells.")


def write_markdown(rows: list[dict], taus: list[dict], runs: list[SeedRun], baseline: str,
                   path: Path, images: Sequence[Path] = ()) -> str:
    """results.md: the budget, the score table, the diagnostics table, the tau table."""
    from jepa_wm.io import atomic_path

    notes = [(f"Scores are real-env returns; mean and std over seeds; 95% CI: percentile "
              f"bootstrap of the mean over seeds ({N_RESAMPLES} resamples, random_state "
              f"{RANDOM_STATE}); IQM over all real episodes of all seeds; P(> baseline): "
              f"probability that a random seed beats a random seed of `{baseline}` "
              "(ties 1/2).")]
    if any(r["n_seeds"] == 1 for r in rows):
        notes.append("With one seed the CI is the point itself and the std is n/a.")
    if baseline not in {r["variant"] for r in rows}:
        notes.append(f"Baseline `{baseline}` has no finished run, so P(> baseline) is n/a.")
    if (warning := completeness_note(rows)) is not None:
        notes.insert(0, warning)
    parts = [f"# {Path(path).parent.parent.name}: results", "", budget_line(runs), "",
             markdown_table(rows, MAIN_COLUMNS), "", *notes, "", "## Dream fidelity", "",
             FIDELITY_NOTE, "",
             markdown_table(rows, FIDELITY_COLUMNS), "", "## Diagnostics", "",
             markdown_table(rows, DIAG_COLUMNS), ""]
    if taus:
        parts += ["## Dream temperature", "", markdown_table(
            taus, [("variant", "variant", 0), ("tau", "tau", 2), ("dream_mean", "dream", 1),
                   ("real_mean", "real", 1), ("n_seeds", "seeds", 0)]), ""]
    parts += [f"![{p.stem}]({p.name})" for p in images]
    text = "\n".join(parts) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return text


def print_table(rows: list[dict], title: str) -> None:
    """The main table on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for _, name, _ in MAIN_COLUMNS:
        table.add_column(name, justify="left" if name == "variant" else "right")
    for row in rows:
        table.add_row(*(Text(_cell(row, k, d)) for k, _, d in MAIN_COLUMNS))  # no markup
    console = Console(width=max(120, len(MAIN_COLUMNS) * 14))
    console.print(table)
    if (warning := completeness_note(rows)) is not None:
        console.print(Text(warning.replace("**", "")))


# -- plots ---------------------------------------------------------------------------------


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
        flat = _flatten(entry)
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


# -- W&B -----------------------------------------------------------------------------------


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


# -- entry point ---------------------------------------------------------------------------


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
    write_csv(rows, out / "results.csv")
    if taus:
        write_csv(taus, out / "tau.csv")
    images = [p for p in (plot_scores(rows, runs, out / "scores.png"),
                          plot_cmaes(runs, out / "cmaes.png"),
                          plot_taus(taus, out / "tau.png")) if p]
    videos = dream_gifs(runs, out) if gifs else []
    write_markdown(rows, taus, runs, baseline, out / "results.md", [*images, *videos])
    if not quiet:
        print_table(rows, f"{root.name}: real-env return over seeds (baseline {baseline})")
        print(budget_line(runs))
    log_wandb(rows, runs, root, out, images, videos, sweep, baseline)
    print(f"report: {out / 'results.md'}")
    return rows


def dream_gifs(runs: list[SeedRun], out: Path) -> list[Path]:
    """One GIF per variant (its first finished seed) of a dream beside the real episode
    it started from; a variant whose files cannot be read is skipped with a note."""
    paths = []
    for variant in sorted({r.variant for r in runs}):
        run = next((r for r in runs if r.variant == variant and r.ok), None)
        if run is None:
            continue
        try:
            paths.append(render_dream_gif(run, out / f"dream-{variant}.gif"))
        except Exception as e:  # a picture must never sink the table
            print(f"report: no dream GIF for {variant}: {type(e).__name__}: {e}")
    return paths


def nearest_frames(z: torch.Tensor, latents, memory, store, chunk: int = 65536) -> np.ndarray:
    """For each dreamed latent ``z`` ``(T, D)`` (M's standardised space), the stored frame
    whose latent is nearest (L2, standardised): uint8 ``(T, 3, H, W)``."""
    import torch

    best_d = torch.full((len(z),), float("inf"))
    best_i = torch.zeros(len(z), dtype=torch.long)
    for start in range(0, len(latents.z), chunk):
        block = memory.standardise(torch.tensor(np.array(latents.z[start:start + chunk]),
                                                dtype=torch.float32))
        d, i = torch.cdist(z, block).min(dim=1)
        better = d < best_d
        best_d[better], best_i[better] = d[better], i[better] + start
    return store.frames(best_i.numpy())


def _to_rgb(frames: np.ndarray, size: int) -> list:
    """uint8 ``(T, 3, H, W)`` -> PIL images ``size x size``."""
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0))).resize(
        (size, size), Image.NEAREST) for f in frames]


def render_dream_gif(run: SeedRun, path: Path, max_frames: int = 100, seed: int = 0,
                     scale: int = 2) -> Path:
    """Animate one dream of ``run``'s M beside the real episode it started from.

    The dream starts from the latent of the episode's first frame and is fed the
    episode's own actions, so each dreamed step lines up with a real one. Panels: the real
    frames; for each dreamed z the nearest real frame in the store's latents (any V);
    and, when V can ``decode`` (the VAE), the dreamed z decoded to pixels. After the dream
    ends (M predicts death) its last frame stays, darkened.
    """
    import torch

    with torch.no_grad():
        return _render_dream_gif(run, path, max_frames, seed, scale)


def _render_dream_gif(run: SeedRun, path: Path, max_frames: int, seed: int, scale: int
                      ) -> Path:
    import torch
    from PIL import Image, ImageDraw

    from jepa_wm.data import RolloutStore
    from jepa_wm.dream import Dream
    from jepa_wm.memory import load_latents, load_memory
    from jepa_wm.vision.base import load_vision

    store_dir = (run.pipeline or {}).get("store")
    if not store_dir:
        raise UserError(f"{run.folder}/pipeline.json: does not name the rollout store")
    store = RolloutStore(Path(store_dir) / "rollouts")
    memory = load_memory(stage_folder(run.folder, "train-memory") / "final.ckpt")
    latents = load_latents(stage_folder(run.folder, "encode"))
    vision = load_vision(stage_folder(run.folder, "train-vision") / "final.ckpt")
    tau = float(((run.config or {}).get("controller_train") or {}).get("tau", 1.0))

    ep = int(np.argmax(store.episode_lengths))  # the longest episode shows the most
    start = int(store.episode_starts[ep])
    steps = int(min(store.episode_lengths[ep], max_frames))
    real = store.frames(slice(start, start + steps))
    actions = store.actions(slice(start, start + steps))
    z0 = memory.standardise(torch.tensor(np.array(latents.z[start:start + 1]),
                                         dtype=torch.float32))
    dream = Dream(memory, z0, tau=tau, max_steps=steps, compact=False)
    state = dream.reset(1, seed=seed)
    zs = [z0[0]]
    for t in range(steps - 1):
        state, z, _, done = dream.step(state, torch.as_tensor(actions[t:t + 1]))
        zs.append(z[0])
        if bool(done[0]):
            break
    dreamed = torch.stack(zs)  # (T', D) standardised
    panels = {"real": real, "dream: nearest": nearest_frames(dreamed, latents, memory, store)}
    if callable(getattr(vision, "decode", None)):
        raw = dreamed * memory.latent_std + memory.latent_mean
        pix = vision.decode(raw.to(vision.device)).clamp(0, 1).cpu()
        panels["dream: decoded"] = (pix.numpy() * 255).round().astype(np.uint8)
    size = real.shape[-1] * scale
    columns = []
    for name, frames in panels.items():
        images = _to_rgb(frames, size)
        while len(images) < steps:  # the dream ended: hold its last frame, darkened
            images.append(Image.eval(images[len(zs) - 1], lambda v: v // 3))
        columns.append((name, images))
    gif = []
    for t in range(steps):
        canvas = Image.new("RGB", (size * len(columns), size + 14), "black")
        draw = ImageDraw.Draw(canvas)
        for k, (name, images) in enumerate(columns):
            canvas.paste(images[t], (k * size, 14))
            draw.text((k * size + 2, 1), name, fill="white")
        gif.append(canvas)
    gif[0].save(path, save_all=True, append_images=gif[1:], duration=70, loop=0,
                optimize=True)
    return path
