"""The paper's temperature table (issue 11): on one finished run's fixed dream (its V, M and
latents), C trained by CMA-ES in the dream at each tau, scored in that dream and in the
real game, beside Ha & Schmidhuber's figures.

    python benchmarks/tau_table.py RUNS/<experiment>/<variant>/seed<k> [--taus ...]

Runs ``jepa-wm evaluate`` (the real CLI) with ``--evaluate.taus`` on the parts the run's
own evaluate stage read (after ``iterate`` rounds, the last round's M and C), into
``<cell>/eval_taus`` (resumable: each tau's CMA-ES is its own folder), with the run's
resolved config; at the run's own tau it is the run's C. Writes
``benchmarks/results/tau_table.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from common import cpu_name, loadavg, results_path

from jepa_wm.contract import STAGE, stage_folder

#: Ha & Schmidhuber 2018, DoomTakeCover, C trained in the dream: tau -> (dream, real).
PAPER = {0.10: (2086, 193), 0.50: (2060, 196), 1.00: (1145, 868), 1.15: (918, 1092),
         1.30: (732, 753)}


def real_ci(row: dict, episodes: int) -> str:
    """The real score's 95% CI: a percentile bootstrap over the episodes when the row has
    them (evaluate's tau rows from 2026-12-04 on), else mean ± 1.96 standard errors (std
    over ``episodes`` episodes, normal approximation, marked *)."""
    from jepa_wm.report import bootstrap_ci

    if row.get("real_scores"):
        low, high = bootstrap_ci(row["real_scores"])
        return f"[{low:.0f}, {high:.0f}]"
    half = 1.96 * row["real_std"] / math.sqrt(max(episodes - 1, 1))
    return f"[{row['real_mean'] - half:.0f}, {row['real_mean'] + half:.0f}]*"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", type=Path,
                        help="A finished run: RUNS/<experiment>/<variant>/seed<k>.")
    parser.add_argument("--taus", type=float, nargs="+", default=sorted(PAPER),
                        help="Temperatures, trained in this order (the table is sorted): "
                        "give the ones that matter first, as a stopped run resumes τ by τ.")
    parser.add_argument("--out", type=Path, default=None, help="Results file.")
    args = parser.parse_args()
    cell = args.cell.resolve()
    out = stage_folder(cell, "evaluate").with_name("eval_taus")
    # the parts evaluate itself reads (after an iterate stage: its last round's M and C)
    parts = [arg for flag, (stage, name) in STAGE["evaluate"].reads.items()
             if stage != "collect" and flag != "fidelity"
             for arg in (f"--{flag}", str(stage_folder(cell, stage) / name))]
    cmd = [sys.executable, "-m", "jepa_wm.cli", "evaluate", "--config",
           str(cell / "config.yaml"), *parts, "--out", str(out),
           "--evaluate.taus", json.dumps(args.taus)]
    load_before, start = loadavg(), time.time()
    done = subprocess.run(cmd, env={**os.environ, "WANDB_MODE": "disabled"}, check=False)
    if done.returncode != 0:
        return done.returncode
    minutes = (time.time() - start) / 60
    results = json.loads((out / "results.json").read_text())
    cfg = yaml.safe_load((cell / "config.yaml").read_text())
    cc, ev = cfg["controller_train"], cfg["evaluate"]
    rows = [("| tau | dream (ours) | real (ours) ± std | real 95% CI | paper: dream | "
             "paper: real |"), "|---:|---:|---:|---|---:|---:|"]
    own = {"tau": results["tau"], "dream_mean": results["dream_mean"],
           "real_mean": results["real_mean"], "real_std": results["real_std"],
           "real_scores": results.get("real_scores")}  # the run's own C, at its own tau
    table = results["tau_table"]
    if all(abs(r["tau"] - own["tau"]) > 1e-9 for r in table):
        table = [*table, own]
    for r in sorted(table, key=lambda r: r["tau"]):
        paper = PAPER.get(round(r["tau"], 2), ("", ""))
        rows.append(f"| {r['tau']:.2f} | {r['dream_mean']:.0f} | {r['real_mean']:.1f} ± "
                    f"{r['real_std']:.1f} | {real_ci(r, ev['episodes'])} | {paper[0]} | "
                    f"{paper[1]} |")
    text = "\n".join([
        "# The temperature table: C trained in the dream at each tau (issue 11)", "",
        (f"- command: `python benchmarks/tau_table.py {args.cell}` (runs `{' '.join(cmd[2:5])} "
        f"... --evaluate.taus {json.dumps(args.taus)}` on the V, M and latents the run's C "
        "was evaluated with)"),
        (f"- written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}, "
        f"{os.cpu_count()} CPUs; load {load_before} before, {loadavg()} after; "
        f"{minutes:.1f} min"),
        (f"- run: `{cfg['experiment']}` / `{cfg['variant']}` seed {cfg['seed']}; each C: CMA-ES "
        f"{cc['generations']} generations x {cc['popsize']} x {cc['rollouts']} dreams of up "
        f"to {cc['max_steps']} steps, deaths {cc['done']}; at tau {cc['tau']} the run's own C"),
        (f"- scores: dream = mean of {ev['dream_episodes']} dreams at that tau; real = "
        f"{ev['episodes']} episodes on the fixed evaluation seeds (the same for every tau)"),
        (f"- the run's own C (tau {results['tau']}): real {results['real_mean']:.1f} ± "
        f"{results['real_std']:.1f}, dream {results['dream_mean']:.0f}"),
        ("- real 95% CI: percentile bootstrap over the episodes; * = mean ± 1.96 standard "
         "errors (normal approximation) for rows written before evaluate kept the episode "
         "scores"), "",
        *rows, ""])
    path = results_path("tau_table", False, args.out)
    path.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
