"""Dream-to-real transfer: the ``recon_vs_jepa`` sweep at the ``doom_fast`` budget, 5 seeds,
and its report beside the paper's figures.

    python benchmarks/transfer.py [--jobs 2]   # the 30-cell sweep: hours of CPU on 2 cores
    python benchmarks/transfer.py --quick      # the smoke sweep: a check that it works

Runs ``jepa-wm sweep SWEEP --out RUNS --jobs N`` (the real CLI, in a subprocess). The sweep
skips every finished cell, so a killed or timed-out run continues where it stopped: run the
same command again. Then writes ``benchmarks/results/transfer.md`` (``transfer_quick.md``
with ``--quick``, which never overwrites the real result): the command, machine, date and
load, the sweep's report table, uniform random play and the data policy replayed on the
variants' evaluation episodes (``benchmarks/baselines.py``), the wall time of one
variant+seed, and the issue's targets with the margin each is met or missed by. The score
plot is copied beside it.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from baselines import play  # benchmarks/baselines.py
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)

from jepa_wm.contract import run_paths
from jepa_wm.controller.evaluate import eval_seeds
from jepa_wm.envs import EnvSettings
from jepa_wm.report import STAGES, find_runs, summarize, train_length, wall_times
from jepa_wm.report.stats import bootstrap_ci
from jepa_wm.sweep import load_sweep, make_cells

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SWEEPS = {"full": "configs/sweeps/recon_vs_jepa.yaml", "quick": "configs/sweeps/smoke.yaml"}

# Ha & Schmidhuber (2018), DoomTakeCover, C trained only in the dream, 10,000 random rollouts.
PAPER = [("World Models, dream-trained C, tau 1.15 (paper)", "1092 +- 556"),
         ("random policy (paper)", "210 +- 108"),
         ("solved (the task's definition)", ">= 750")]
TARGET_SCORE = 750.0
TARGET_CELL_MINUTES = 15.0  # issue 11: doom_fast in <= 15 minutes per variant and seed on 2 cores


def experiment_folder(spec, runs: Path) -> Path:
    """RUNS/<experiment>, where the sweep writes its cells (resolved as the sweep does)."""
    cell = make_cells(spec, runs)[0]
    return run_paths(cell.resolve(), runs).root


def cell_minutes(run) -> float:
    """One variant+seed's pipeline, in minutes: the sum of its stages' wall times. The
    shared collect counts in full for every variant (a lone run pays it)."""
    times = [t for t in wall_times(run).values() if math.isfinite(t)]
    return sum(times) / 60 if times else math.nan


def stage_table(rows, runs) -> str:
    """Mean wall seconds per stage (the report's rows) and per variant, and the whole
    pipeline in minutes."""
    lines = ["| variant | " + " | ".join(STAGES) + " | pipeline min (mean, max) |",
             "|---|" + "---:|" * (len(STAGES) + 1)]
    for row in (r for r in rows if r["n_seeds"]):
        secs = [row[f"wall_{stage.replace('-', '_')}_s"] for stage in STAGES]
        mins = [cell_minutes(r) for r in runs if r.variant == row["variant"] and r.ok]
        lines.append(f"| {row['variant']} | " + " | ".join(f"{s:.0f}" for s in secs)
                     + f" | {sum(mins) / len(mins):.1f}, {max(mins):.1f} |")
    return "\n".join(lines)


def targets(rows, runs) -> str:
    """The issue's score and time targets, each with its margin."""
    best = max((r for r in rows if r["n_seeds"]), key=lambda r: r["real_mean"])
    score = best["real_mean"]
    worst_cell = max(cell_minutes(r) for r in runs if r.ok)
    verdict = ("met" if score >= TARGET_SCORE else
               f"missed by {TARGET_SCORE - score:.1f} ({100 * (1 - score / TARGET_SCORE):.0f}%)")
    cell = ("met" if worst_cell <= TARGET_CELL_MINUTES else
            f"missed by {worst_cell - TARGET_CELL_MINUTES:.1f} min")
    return "\n".join([
        "| target | figure | verdict |", "|---|---:|---|",
        (f"| best variant >= {TARGET_SCORE:.0f} real score | {best['variant']}: {score:.1f} "
         f"(95% CI [{best['ci_low']:.1f}, {best['ci_high']:.1f}]) | {verdict} |"),
        (f"| one variant+seed pipeline <= {TARGET_CELL_MINUTES:.0f} min | slowest cell "
         f"{worst_cell:.1f} min | {cell} |")])


def baseline_config(runs, baseline: str) -> dict | None:
    """The resolved config of the first baseline run that has one (None: no such run)."""
    return next((r.config for r in runs if r.variant == baseline and r.config), None)


def policy_rows(runs, baseline: str, seeds: list[int]) -> list[str]:
    """Uniform random play and the data policy (the collection's held random action),
    played on the evaluation seeds every variant played, with the variants' statistic
    (mean of the seeds' means, 95% bootstrap CI over seeds): the bars a dream-trained C
    has to clear. The env, hold and episode count come from the baseline's resolved config."""
    c = baseline_config(runs, baseline)
    if c is None:
        return []
    env = EnvSettings(c["env"], c["image_size"], c["frame_skip"], c["max_episode_steps"])
    episodes, hold = c["evaluate"]["episodes"], c["max_hold"]
    rows = []
    for max_hold, name in [(1, "uniform random play"),
                           (hold, f"the data policy, a random action held 1..{hold} steps")]:
        means = [float(play(max_hold, eval_seeds(s, episodes), env).mean()) for s in seeds]
        low, high = bootstrap_ci(means)
        rows.append(f"| {name} ({len(seeds)} seeds, the variants' evaluation episodes) | "
                    f"{np.mean(means):.1f} [{low:.1f}, {high:.1f}] |")
    return rows


def budget_table(runs, baseline: str) -> str:
    """This budget beside the paper's, from the baseline's resolved config: where the
    score gap to 750 can come from."""
    c = baseline_config(runs, baseline)
    if c is None:
        return "(no resolved config of the baseline found)"
    v, m, cc = (c["vision_model"]["init_args"], c["memory_model"]["init_args"],
                c["controller_train"])
    vt, mt = c["vision_train"], c["memory_train"]
    ours_v = f"ConvVAE, z {v.get('latent_dim')}, {train_length(vt)} x {vt['batch_size']}"
    ours_m = f"LSTM {m['hidden_size']}, K {m['num_mixtures']}, {train_length(mt)}"
    ours_c = f"CMA-ES {cc['popsize']} x {cc['rollouts']} x {cc['generations']} generations"
    rows = [
        ("random episodes collected", "10,000", f"{c['episodes']:,}"),
        (f"V ({baseline})", "ConvVAE, z 64", ours_v),
        ("M", "LSTM 512, K 5", ours_m),
        ("C search (tau)", "CMA-ES 64 x 16 per generation (1.15)", f"{ours_c} ({cc['tau']})"),
        ("dream length", "2100 steps", f"{cc['max_steps']} steps"),
        ("dream deaths", "p(done) > 0.5", cc["done"]),
    ]
    return "\n".join(["| | paper | this budget |", "|---|---|---|",
                      *[f"| {a} | {b} | {d} |" for a, b, d in rows]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="The smoke sweep (2 variants x 2 seeds, tiny budget).")
    parser.add_argument("--runs", default="runs", help="Runs folder the sweep writes to.")
    parser.add_argument("--jobs", type=int, default=2, help="Cells at once (sweep --jobs).")
    parser.add_argument("--out", default=None, help="Results file (default "
                        "benchmarks/results/transfer.md, transfer_quick.md with --quick).")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    sweep_file = ROOT / SWEEPS[mode]
    runs_dir = Path(args.runs).resolve()
    out = Path(args.out or RESULTS / f"transfer{'_quick' if args.quick else ''}.md")

    command = [sys.executable, "-m", "jepa_wm.cli", "sweep", str(sweep_file),
               "--out", str(runs_dir), "--jobs", str(args.jobs)]
    load_before, start = loadavg(), time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - start

    spec = load_sweep(sweep_file)
    baseline = spec.baseline or "vae"
    folder = experiment_folder(spec, runs_dir)
    runs = find_runs(folder)
    rows = summarize(runs, baseline)
    report = (folder / "report" / "results.md").read_text()
    body = "\n".join(line for line in report.splitlines()[1:] if not line.startswith("!["))
    plot = folder / "report" / "scores.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    if plot.exists():
        shutil.copy(plot, out.with_name(out.stem + "_scores.png"))

    title = f"# Transfer: `{SWEEPS[mode]}`"
    if args.quick:
        title += " (--quick: a check, not a result)"
    header = [
        (f"- command: `python benchmarks/transfer.py{' --quick' if args.quick else ''} "
         f"--jobs {args.jobs}{'' if args.runs == 'runs' else ' --runs ' + args.runs}` "
         f"(runs `jepa-wm sweep {SWEEPS[mode]} --out {args.runs} "
         f"--jobs {args.jobs}`; finished cells are skipped, so this is also how to resume)"),
        (f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {cpu_name()}, "
         f"{os.cpu_count()} CPUs"),
        (f"- this invocation: {wall / 60:.1f} min wall, {args.jobs} cells at a time; load "
         f"average {load_before} before, {loadavg()} after"),
        (f"- cells: {sum(r.ok for r in runs)} finished of {len(runs)} folders; their "
         f"pipelines add up to {sum(cell_minutes(r) for r in runs if r.ok):.0f} min (cells "
         "run side by side overlap, so a sweep's wall time is less)")]
    ours = [(f"| {r['variant']} ({r['n_seeds']} seeds, this budget) | {r['real_mean']:.1f} "
             f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}] |") for r in rows if r["n_seeds"]]
    ours += policy_rows(runs, baseline, spec.seeds)
    text = "\n".join([
        title, "", *header, "",
        "## Beside the paper", "",
        "| agent | real score (DoomTakeCover) |", "|---|---:|",
        *[f"| {name} | {score} |" for name, score in PAPER], *ours, "",
        "## Targets", "", targets(rows, runs), "",
        "What separates this budget from the paper's (the baseline's resolved config):", "",
        budget_table(runs, baseline), "",
        "## Wall time per variant+seed (seconds per stage, as each cell recorded it)", "",
        stage_table(rows, runs), "",
        (f"Cells ran {args.jobs} at a time on {os.cpu_count()} cores, so each stage had "
         "about one core: a lone run on an idle machine is faster."), "",
        "## The sweep's report", body])
    out.write_text(text + "\n")
    print(f"\n{text}\n\nwrote {out}")


if __name__ == "__main__":
    main()
