"""One CMA-ES generation in a finished run's dream, timed at given thread counts and
precisions: what the controller stage costs per generation, on the run's own M.

The synthetic benchmarks (``dream.py``, ``dream_paper.py``) keep every dream alive for
2,100 steps. A real generation does not: dreams die at M's hazard, the batch shrinks, and
the longest dream sets the number of steps. This plays the run's own dreams (its M, its
starts, τ and death rule, ``controller_train``'s popsize and rollouts) with candidates
drawn around the run's kept C at its last generation's step size, the population a late
generation evaluates. The same candidates and noise at every setting; settings run
alternated, ``--repeats`` times each.

    python benchmarks/generation.py RUN [--threads 1 2] [--precision 32 bf16]
        [--kernel eager fused] [--repeats 2]

RUN is a finished cell (``runs/<experiment>/<variant>/seed<k>``). Appends a table to
``benchmarks/results/generation.md`` with the command, CPU and load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# isort: off
import jepa_wm  # noqa: F401  first, as the CLI does: its OpenMP default is set before torch loads
# isort: on
import numpy as np
import torch
from common import RESULTS, append_record, cpu_name, loadavg  # benchmarks/common.py


def main() -> int:
    from jepa_wm.config import experiment_parser
    from jepa_wm.controller import ControllerFile
    from jepa_wm.controller.cmaes import CENTER_FACTOR, dream_fitness, make_dream
    from jepa_wm.data import RolloutStore
    from jepa_wm.memory import latents_store_path, load_latents, load_memory
    from jepa_wm.nets.controller import ControllerPopulation, controller_input_dim

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="A finished cell.")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"])
    parser.add_argument("--kernel", nargs="+", default=["eager"], choices=["eager", "fused"],
                        help="controller_train.kernel values to time.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "generation.md")
    args = parser.parse_args()
    run = args.run
    for need in ("config.yaml", "memory/final.ckpt", "controller/best.npz",
                 "controller/history.json"):
        if not (run / need).exists():
            sys.exit(f"error: {run}: no {need}; give a cell whose controller stage finished")
    cfg = experiment_parser().parse_args(["--config", str(run / "config.yaml")])
    cc = cfg.controller_train
    memory = load_memory(run / "memory" / "final.ckpt")
    latents = load_latents(run / "latents")
    store = RolloutStore(latents_store_path(latents))
    kept = ControllerFile.load(run / "controller" / "best.npz").params
    sigma = json.loads((run / "controller" / "history.json").read_text())[-1]["sigma"]
    rng = np.random.default_rng(cfg.seed)
    candidates = np.vstack([kept + sigma * rng.standard_normal((cc.popsize, kept.size)),
                            kept[None]]).astype(np.float32)
    input_dim = controller_input_dim(memory.latent_dim, memory.net.hidden_size,
                                     cc.include_cell)
    populations = {k: ControllerPopulation(torch.as_tensor(candidates), input_dim,
                                           memory.action, kernel=k) for k in args.kernel}
    counts = np.r_[np.full(cc.popsize, cc.rollouts), CENTER_FACTOR * cc.rollouts]
    dreams = {}
    for p in args.precision:  # the parsed section is a Namespace: set the keys, build
        for k in args.kernel:
            cc.precision, cc.kernel = p, k
            dreams[(p, k)] = make_dream(cc, memory, latents, store)
    settings = [(t, p, k) for t in args.threads for p in args.precision for k in args.kernel]
    times: dict = {s: [] for s in settings}
    fitness: dict = {}
    load = loadavg()
    for _ in range(args.repeats):
        for t, p, k in settings:
            torch.set_num_threads(t)
            start = time.perf_counter()
            scores, steps = dream_fitness(dreams[(p, k)], populations[k], counts, cfg.seed,
                                          cc.include_cell)
            times[(t, p, k)].append(time.perf_counter() - start)
            fitness[(t, p, k)] = (float(scores.mean()), steps)
            print(f"generation: {t} threads, {p}, {k}: {times[(t, p, k)][-1]:.1f} s, {steps} "
                  f"dream steps, mean fitness {scores.mean():.0f}", flush=True)
    base = min(times[settings[0]])
    rows = [f"| {t} | {p} | {k} | {', '.join(f'{s:.1f}' for s in times[(t, p, k)])} | "
            f"{fitness[(t, p, k)][1] / min(times[(t, p, k)]) / 1e3:.1f}k | "
            f"{base / min(times[(t, p, k)]):.2f}x | {fitness[(t, p, k)][0]:.0f} |"
            for t, p, k in settings]
    openmp = ", ".join(f"{k}={os.environ.get(k, 'unset')}"
                       for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
    append_record(
        args.out, "One CMA-ES generation in a run's own dream (`benchmarks/generation.py`)",
        "The run's M, starts, τ and death rule; its popsize x rollouts (+ the mean on "
        f"{CENTER_FACTOR}x the rollouts); candidates drawn around its kept C at its last "
        "step size (a late generation). Seconds per generation, each setting alternated "
        "with the others; dream steps/s from the fastest; gain against the first setting.",
        "generation.py",
        f"{cpu_name()}, {openmp}, load {load} before, {loadavg()} after; {cc.popsize} x "
        f"{cc.rollouts} dreams of up to {cc.max_steps} steps, z {memory.latent_dim}, LSTM "
        f"{memory.net.hidden_size}.",
        "| threads | precision | kernel | seconds per generation | dream steps/s | gain | "
        "mean fitness |\n|---:|---|---|---|---:|---:|---:|\n" + "\n".join(rows))
    print(f"generation: appended {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
