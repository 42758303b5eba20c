"""The report's tables: results.csv, results.md (budget, scores, fidelity, diagnostics,
temperature) and the terminal table."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jepa_wm.report.runs import STAGES, SeedRun
from jepa_wm.report.stats import N_RESAMPLES, RANDOM_STATE


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
    it = cfg.get("iterate") or {}
    rounds = (f"then {it['rounds']} round(s) of iterative training (C plays "
              f"{it.get('episodes')} real episodes, M {it.get('memory_epochs')} more epochs, "
              f"a new C); ") if it.get("rounds") else ""
    return (f"Budget per run: {cfg.get('env')}: {cfg.get('episodes')} episodes collected; "
            f"V {train_length(cfg.get('vision_train', {}))}; "
            f"M {train_length(cfg.get('memory_train', {}))}; "
            f"CMA-ES {c.get('generations')} generations x {c.get('popsize')} candidates x "
            f"{c.get('rollouts')} rollouts in the {c.get('where')} (tau {c.get('tau')}); "
            f"{rounds}evaluation {e.get('episodes')} real episodes and {e.get('dream_episodes')} "
            f"dreams; seeds {', '.join(map(str, seeds))}.")



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
DIAG_COLUMNS = [("variant", "variant", 0), ("v_budget", "V budget", 0),
                ("v_steps", "V steps", 0), ("v_tflops", "V TFLOPs", 1),
                ("v_train_s", "V train s", 0), ("v_loss", "V loss", 4), ("m_loss", "M loss", 4),
                ("effective_rank", "eff. rank", 2)] + [
                (f"wall_{s.replace('-', '_')}_s", f"{s} s", 1) for s in STAGES]
FIDELITY_NOTE = ("Held-out episodes M never trained on: Σ p(done) per episode (a calibrated "
                 "head gives the observed deaths, ~1), the data policy's mean survival in the "
                 "dream and in the game (a faithful dream: ratio 1), open-loop latent MSE at "
                 "10 and 50 steps against copying the last z (standardised units); the hold "
                 "ratio: the largest dream/game survival ratio of holding one action for a "
                 "whole episode (a dream that rates a hold safer than the game, > 1, is one "
                 "a controller can exploit by running into a wall). M's teacher-forced "
                 "hazard per step far from a death (32 or more steps before an episode's "
                 "end) and in the last 2 steps before one: a death head that places deaths "
                 "where they happen gives a small first figure and a large second (on the "
                 "ladder no M whose ratio was below 80 has transferred). Where a fireball "
                 "touches the player (VizDoom's recorded distance), M's hazard per step over "
                 "the game's deaths per step there: near 1 when M sees the hit coming "
                 "(the JEPAs' M's: 0.5-0.7). C's episodes: M's "
                 "hazard summed along the trained controller's real evaluation episodes "
                 "against the share that ended in a death (under it: M rates C's own states "
                 "safer than the game). C's deaths per step in the game, M's hazard per step "
                 "on those same steps, and C's deaths per step in its dreams: game / M "
                 "above 1 is M's death head underrating C's states, M / dream above 1 the "
                 "dream's own trajectories being safer than the game's.")
FIDELITY_COLUMNS = [("variant", "variant", 0),
                    ("fidelity_death_sum_per_episode", "Σ p(done)/episode", 2),
                    ("fidelity_brier", "Brier", 5),
                    ("fidelity_policy_survival_dream", "policy survival: dream", 0),
                    ("fidelity_policy_survival_real", "game", 0),
                    ("fidelity_policy_survival_ratio", "ratio", 2),
                    ("fidelity_open_loop_mse_10", "open-loop MSE@10", 3),
                    ("fidelity_copy_mse_10", "copy@10", 3),
                    ("fidelity_open_loop_mse_50", "open-loop MSE@50", 3),
                    ("fidelity_copy_mse_50", "copy@50", 3),
                    ("fidelity_hold_survival_ratio_max", "hold ratio", 2),
                    ("fidelity_hazard_early", "M's hazard/step far from a death", 5),
                    ("fidelity_hazard_last2", "at a death", 3),
                    ("fidelity_touching_ratio", "M / game where a fireball touches", 2),
                    ("fidelity_touching_share", "share of M's hazard there", 2),
                    ("fidelity_touching_death_share", "of the deaths", 2),
                    ("c_death_sum_per_episode", "C's episodes: Σ p(done)", 2),
                    ("c_deaths_per_episode", "deaths", 2),
                    ("c_death_rate_game", "C deaths/step: game", 5),
                    ("c_hazard_rate_game", "M's hazard/step there", 5),
                    ("c_death_rate_dream", "dream", 5)]


SCALING_NOTE = ("The sweep's variants at several data budgets (`overrides: {episodes: "
                "[...]}`): real return against the frames collected, mean and 95% bootstrap "
                "CI over seeds (scaling.png plots it on a log axis).")
BUDGET_NOTE = ("V budget: what limited V's training (`vision_train.max_steps`/`max_epochs`, "
               "`max_flops` or `max_time`); V steps, TFLOPs (FLOPs per training step counted "
               "by torch's FlopCounterMode, times the steps) and training seconds are what V "
               "got, mean over seeds: equal steps is not equal compute.")
PROBE_NOTE = ("What V's latent knows about the game: linear probes of z fitted on the "
              "training episodes, scored on the episodes V held out (mean over seeds). "
              "R² for the player's position and health, the number of fireballs in view, "
              "and the nearest fireball's screen x and distance (frames with one in view); "
              "accuracy for `fireball_in_view`, next to always guessing the majority class "
              "(`base`); average precision for `fireball_touching` (the nearest fireball "
              "hitting the player now, 1-2% of frames and most deaths; chance is `base`, "
              "the share of such frames) and `death_next` (the step from this frame ends "
              "the episode in a death: what M's death head must see; chance is `base`). "
              "`jepa_wm/probes.py` says how.")


def probe_columns(rows: list[dict]) -> list[tuple[str, str, int]]:
    """The probe table's columns: one per ``probe_<target>`` key the rows have."""
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("probe_")]
    return [("variant", "variant", 0)] + [(k, k[len("probe_"):], 3) for k in keys]


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
                   path: Path, images: Sequence[Path] = (), scaling: Sequence[dict] = ()) -> str:
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
             markdown_table(rows, FIDELITY_COLUMNS), ""]
    if len(probe := probe_columns(rows)) > 1:
        parts += ["## Probes", "", PROBE_NOTE, "", markdown_table(rows, probe), ""]
    parts += ["## Diagnostics", "", BUDGET_NOTE, "",
              markdown_table(rows, DIAG_COLUMNS), ""]
    if taus:
        parts += ["## Dream temperature", "", markdown_table(
            taus, [("variant", "variant", 0), ("tau", "tau", 2), ("dream_mean", "dream", 1),
                   ("real_mean", "real", 1), ("n_seeds", "seeds", 0)]), ""]
    if scaling:
        parts += ["## Data scaling", "", SCALING_NOTE, "", markdown_table(
            list(scaling), [("variant", "variant", 0), ("episodes", "episodes", 0),
                            ("frames", "frames", 0), ("n_seeds", "seeds", 0),
                            ("real_mean", "real mean", 1), ("ci", "95% CI", 1)]), ""]
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
