"""The data-scaling curve (issue 13): real score against the frames collected, per V, from
the ladder's runs of one recipe at several data budgets.

    python benchmarks/ladder.py configs/ladder/m512_shared_h30_it1_e200.yaml --seed S \\
        [--variant configs/variants/jepa_ema.yaml]          # each point, each seed, each V
    python benchmarks/scaling.py configs/ladder/m512_shared_h30_it1_e200.yaml \\
        configs/ladder/m512_shared_h30_it1.yaml configs/ladder/m512_shared_h30_it1_e3000.yaml

The runs are the ladder's (``benchmarks/ladder.py``: its run folders, or the rows it
recorded in ``transfer_ladder.json`` when a folder is gone), so a point measured for the
ladder is not run twice. Writes ``benchmarks/results/scaling.md`` (per V and budget: the
seeds, their real means, the mean with a 95% bootstrap CI over seeds, the solved seeds,
the dream-fidelity figures, and each JEPA against the VAE on the seeds both ran) and
``scaling.png`` (the report's data-scaling plot: real score against frames, log axis).
A point with fewer seeds than the others says so in its row; one with none is listed as
not run.
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime, timezone
from pathlib import Path

import yaml
from ladder import RESULTS, _f, merged_rows, paired_table, sharpness

from jepa_wm.report.stats import _mean

ROOT = Path(__file__).resolve().parents[1]
#: The real score that solves DoomTakeCover (the paper's threshold): a seed counts as solved
#: when its real mean reaches it; the plot draws it as a dashed line.
SOLVED = 750


def rung_names(rungs: list[Path]) -> dict[str, int]:
    """Each rung file's experiment name (its ladder rows' rung) -> its data budget."""
    out = {}
    for rung in rungs:
        try:
            spec = yaml.safe_load(rung.read_text()) or {}
        except OSError as e:
            raise SystemExit(f"scaling: rung {rung}: {e.strerror}") from None
        if not isinstance(spec, dict) or "experiment" not in spec or "episodes" not in spec:
            raise SystemExit(f"scaling: rung {rung}: needs `experiment:` and `episodes:` "
                             "(a ladder rung at one data budget)")
        out[spec["experiment"]] = int(spec["episodes"])
    if len(set(out.values())) < 2:
        raise SystemExit("scaling: rungs: give rungs at two data budgets or more "
                         f"(got episodes {sorted(set(out.values()))})")
    return out


def points(rows: list[dict], budgets: dict[str, int], variants: list[str] | None
           ) -> list[dict]:
    """Per V and budget, the finished rows (a real score), with the frames of each seed's
    store (from any row of that rung and seed: the store does not depend on V)."""
    frames = {}
    for r in rows:
        rung = r["rung"].split(" [")[0]
        if rung in budgets and r.get("frames"):
            frames[(rung, r["seed"])] = r["frames"]
    by_point: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        rung = r["rung"].split(" [")[0]
        if rung not in budgets or (variants and r["variant"] not in variants):
            continue
        if r["results"].get("real_mean") is not None:
            by_point.setdefault((r["variant"], budgets[rung]), []).append(
                {**r, "frames": frames.get((rung, r["seed"]))})
    names = variants or sorted({v for v, _ in by_point}, key=lambda v: (v != "vae", v))
    out = []
    for variant in names:
        for episodes in sorted(set(budgets.values())):
            rs = sorted(by_point.get((variant, episodes), []), key=lambda r: r["seed"])
            out.append(summarise(variant, episodes, rs))
    return out


def summarise(variant: str, episodes: int, rs: list[dict]) -> dict:
    from jepa_wm.report import bootstrap_ci

    means = [r["results"]["real_mean"] for r in rs]
    low, high = bootstrap_ci(means) if means else (math.nan, math.nan)
    fid = [r["fidelity"] for r in rs]
    return {"variant": variant, "episodes": episodes, "rows": rs,
            "seeds": [r["seed"] for r in rs], "means": means,
            "frames": _mean([r["frames"] for r in rs]),
            "n_seeds": len(rs), "real_mean": _mean(means), "ci_low": low, "ci_high": high,
            "solved": sum(m >= SOLVED for m in means),
            "death_sum": _mean([f.get("death_sum_per_episode") for f in fid]),
            "policy_ratio": _mean([f.get("policy_survival_ratio") for f in fid]),
            "hold_ratio": _mean([f.get("hold_survival_ratio_max") for f in fid]),
            "sharp": [sharpness(f) for f in fid],
            "minutes": _mean([sum(s for s in r["wall"].values() if isinstance(s, (int, float)))
                              / 60 for r in rs])}


def same_seeds(p: dict, q: dict) -> list[tuple[int, float, float]]:
    """The seeds both points ran, as ``(seed, p's real mean, q's real mean)``."""
    theirs = dict(zip(q["seeds"], q["means"]))
    return [(s, m, theirs[s]) for s, m in zip(p["seeds"], p["means"]) if s in theirs]


def write(pts: list[dict], rungs: list[Path], out: Path, png: Path) -> str:
    from jepa_wm.report import plot_scaling

    done = [p for p in pts if p["n_seeds"]]
    plotted = plot_scaling([p for p in done if math.isfinite(p["frames"])], png,
                           {f"solved ({SOLVED})": SOLVED})
    most = max((p["n_seeds"] for p in pts), default=0)
    named = " ".join(str(r.resolve().relative_to(ROOT)) if r.resolve().is_relative_to(ROOT)
                     else str(r) for r in rungs)
    lines = ["# Data scaling (issue 13)", "",
             (f"- command: `python benchmarks/scaling.py {named}`"
             " (each point a ladder rung: `python benchmarks/ladder.py RUNG --variant V "
             "--seed S`)"),
             (f"- written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from the ladder's "
             "runs and recorded rows (`transfer_ladder.json`); each row's machine and "
             "budget are in `transfer_ladder.md`"),
             ("- real: the mean of each seed's 50 real episodes on its fixed evaluation seeds; "
             "mean of the seeds' means with a 95% percentile bootstrap CI over seeds; frames: "
             "the store's, mean over the seeds (— where no store of the point is left)"),
             ("- fidelity (the evaluated C's M on held-out episodes, mean over seeds): Σ p(done) "
             "per episode (1 is calibrated), the data policy's dream / game survival, the hold "
             "ratio, and per seed M's hazard per 1,000 steps far from / at a death (ratio)"), "",
             ("| V | episodes | frames | seeds | real per seed | mean [95% CI] | solved | "
             "Σ p(done) | policy ratio | hold ratio | hazard far / at a death | min per seed |"),
             "|---|---:|---:|---|---|---|---:|---:|---:|---:|---|---:|"]
    for p in pts:
        if not p["n_seeds"]:
            lines.append(f"| {p['variant']} | {p['episodes']:,} | — | not run | | | | | | | | |")
            continue
        short = "" if p["n_seeds"] == most else f" (of {most})"
        lines.append(
            f"| {p['variant']} | {p['episodes']:,} | "
            f"{format(p['frames'], ',.0f') if math.isfinite(p['frames']) else '—'} | "
            f"{', '.join(map(str, p['seeds']))}{short} | "
            f"{', '.join(f'{m:.1f}' for m in p['means'])} | {p['real_mean']:.1f} "
            f"[{p['ci_low']:.0f}, {p['ci_high']:.0f}] | {p['solved']} of {p['n_seeds']} | "
            f"{_f(p['death_sum'], 2)} | {_f(p['policy_ratio'], 2)} | "
            f"{_f(p['hold_ratio'], 2)} | {'; '.join(p['sharp'])} | {_f(p['minutes'], 0)} |")
    vae = {p["episodes"]: p for p in done if p["variant"] == "vae"}
    pairs = {(f"{p['episodes']:,}", p["variant"]): both for p in done
             if p["variant"] != "vae" and p["episodes"] in vae
             and (both := same_seeds(p, vae[p["episodes"]]))}
    lines += ["", *paired_table(
        pairs, "Against the VAE at each budget",
        ("Each other V against the VAE at the same data budget on the seeds both ran: the "
         "mean per-seed difference of the real means with a 95% bootstrap CI over seeds, "
         "and P(V > VAE) over all pairs of seeds."),
        ("episodes", "V", "V", "VAE"))]
    steps = {}
    for p in done:  # each budget against the next smaller one that V ran, same seeds
        smaller = [q for q in done if q["variant"] == p["variant"]
                   and q["episodes"] < p["episodes"]]
        if smaller:
            q = max(smaller, key=lambda q: q["episodes"])
            if both := same_seeds(p, q):
                steps[(p["variant"], f"{q['episodes']:,} -> {p['episodes']:,}")] = both
    lines += paired_table(
        steps, "More data, same V",
        ("Each V at a data budget against itself at the next smaller one, on the seeds both "
         "ran (a seed's larger store begins with the smaller one's episodes, frame for "
         "frame): does the real score climb with the data?"),
        ("V", "episodes", "more", "fewer"))
    lines += [f"![data scaling]({png.name})" if plotted else
              "(no plot: no V has a finished point with a known store size)", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rungs", nargs="+", type=Path,
                        help="Ladder rungs of one recipe at different `episodes`.")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="Variant names to plot (default: every V with a finished row).")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ladder")
    parser.add_argument("--record", type=Path, default=RESULTS / "transfer_ladder.json",
                        help="The ladder's recorded rows (kept up to date from --runs).")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.md")
    args = parser.parse_args()
    budgets = rung_names(args.rungs)
    rows = merged_rows(args.runs, args.record, write=False)
    pts = points(rows, budgets, args.variants)
    print(write(pts, args.rungs, args.out, args.out.with_suffix(".png")))


if __name__ == "__main__":
    main()
