"""The statistics of the report: per variant the mean real score over seeds with a 95%
bootstrap CI (scipy, percentile method, fixed random state), the interquartile mean of all
real episodes, the dream-real gap, the fidelity figures, the probe scores, and the
probability of improvement
over a baseline variant (rliable's definition: P(a random seed of the variant beats a random
seed of the baseline), ties count 1/2)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from jepa_wm.report.runs import STAGES, SeedRun, pick, wall_times

#: results.json ``fidelity`` figures shown per variant (mean over seeds).
FIDELITY_KEYS = ("death_sum_per_episode", "brier", "policy_survival_dream",
                 "policy_survival_real", "policy_survival_ratio", "open_loop_mse_10",
                 "copy_mse_10", "open_loop_mse_50", "copy_mse_50", "hold_survival_ratio_max",
                 "hazard_early", "hazard_last2", "touching_ratio", "touching_share",
                 "touching_death_share")
#: results.json figures of M's death head on C's own real episodes (``evaluate``).
C_FIDELITY_KEYS = ("c_death_sum_per_episode", "c_deaths_per_episode", "c_death_rate_game",
                   "c_hazard_rate_game", "c_death_rate_dream")
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
RANDOM_STATE = 0

# Where each diagnostic may sit in the stage's metrics.json (flattened with "/"), in order.
V_LOSS_KEYS = ("final_loss", "final/loss", "train/loss", "loss", "val/loss")
M_LOSS_KEYS = ("final_loss", "final/loss", "train/loss", "loss", "val/loss")
RANK_KEYS = ("effective_rank", "vision/effective_rank", "final_effective_rank",
             "final/effective_rank")


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


def budget_text(vision: dict | None) -> str:
    """V's budget from its metrics.json: ``4000 steps``, ``3e+15 FLOPs`` or ``600 s``."""
    b = (vision or {}).get("budget")
    if not isinstance(b, dict):
        steps = (vision or {}).get("steps")
        return f"{steps} steps" if steps is not None else ""
    if b.get("kind") == "flops":
        return f"{b['limit']:.3g} FLOPs"
    if b.get("kind") == "seconds":
        return f"{b['limit']:g} s"
    return f"{b.get('steps', b.get('limit'))} steps"


def probe_keys(runs: list[SeedRun]) -> list[str]:
    """Every ``probe_<target>`` score some run's probes.json has, sorted."""
    return sorted({k for r in runs for k in ((r.probes or {}).get("scores") or {})})


def summarize(runs: list[SeedRun], baseline: str = "vae") -> list[dict[str, Any]]:
    """One row per variant (baseline first, then by name); see the module docstring."""
    probes = probe_keys(runs)
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
            "v_budget": " / ".join(sorted({budget_text(r.vision) for r in ok} - {""})),
            "v_steps": _mean([pick(r.vision, ("budget/steps", "steps")) for r in ok]),
            "v_tflops": _mean([pick(r.vision, ("budget/flops",)) / 1e12 for r in ok]),
            "v_train_s": _mean([pick(r.vision, ("budget/seconds",)) for r in ok]),
        }
        for key in C_FIDELITY_KEYS:  # evaluate's, on C's own real episodes
            row[key] = _mean([r.results.get(key, math.nan) for r in ok])
        for key in FIDELITY_KEYS:
            row[f"fidelity_{key}"] = _mean([(r.results.get("fidelity") or {}).get(key, math.nan)
                                            for r in ok])
        for key in probes:  # V's, so every seed whose probe stage finished counts
            row[key] = _mean([((r.probes or {}).get("scores") or {}).get(key, math.nan)
                              for r in mine])
        times = [wall_times(r) for r in ok]
        for stage in STAGES:
            row[f"wall_{stage.replace('-', '_')}_s"] = _mean([t[stage] for t in times])
        row["failed_seeds"] = " ".join(str(r.seed) for r in mine if r.failed is not None)
        row["incomplete_seeds"] = " ".join(str(r.seed) for r in mine
                                           if r.failed is None and r.results is None)
        rows.append(row)
    return rows


#: A sweep's variant name with a data budget from ``overrides: {episodes: [...]}``.
EPISODES_PART = re.compile(r"--episodes=(\d+)")


def store_frames(run: SeedRun) -> float:
    """Frames in the rollout store the run trained on (from its meta.json; a store deleted
    since: as its latent set recorded it), or NaN."""
    import json
    from pathlib import Path

    from jepa_wm.contract import STAGE

    store = (run.pipeline or {}).get("store")
    where = [(Path(store) / "rollouts" / "meta.json", ("frames",))] if store else []
    where.append((run.folder / STAGE["encode"].folder / "meta.json", ("store_identity", "frames")))
    for meta, keys in where:
        try:
            value = json.loads(meta.read_text())
            for k in keys:
                value = value[k]
            return float(value)
        except (TypeError, OSError, ValueError, KeyError):
            continue
    return math.nan


def scaling_rows(rows: list[dict], runs: list[SeedRun]) -> list[dict[str, Any]]:
    """The data-scaling curve of a sweep over ``episodes``: per base variant (the name
    without ``--episodes=N``) and budget N, the frames collected, seeds, real mean and its
    95% CI. Empty unless some base variant has two budgets or more."""
    out = []
    for row in rows:
        m = EPISODES_PART.search(row["variant"])
        if not m:
            continue
        mine = [r for r in runs if r.variant == row["variant"] and r.ok]
        out.append({"variant": EPISODES_PART.sub("", row["variant"]),
                    "episodes": int(m.group(1)),
                    "frames": _mean([store_frames(r) for r in mine]),
                    "n_seeds": row["n_seeds"], "real_mean": row["real_mean"],
                    "ci_low": row["ci_low"], "ci_high": row["ci_high"]})
    budgets = {}
    for r in out:
        budgets.setdefault(r["variant"], set()).add(r["episodes"])
    out = [r for r in out if len(budgets[r["variant"]]) > 1]
    return sorted(out, key=lambda r: (r["variant"], r["episodes"]))


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
