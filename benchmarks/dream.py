"""Dream speed against the real game, in the same run.

Measures dream steps/s (M + C in the loop, one batched step for all dreams) at n = 1, 64
and 1024 dreams, real VizDoom steps/s with V, M and C in the loop (gymnasium vector envs,
as ``evaluate`` plays), and the time of one paper-size CMA-ES generation (64 candidates x
16 rollouts, every dream alive for all 2100 steps: the worst case). M is untrained (speed
does not depend on its weights) with its done head switched off so no dream ends early.

    python benchmarks/dream.py [--quick] [--threads 2]

Writes ``benchmarks/results/dream.md``; the last line printed is
``dream_vs_real_ratio: X`` (dream steps/s at n = 1024 over real steps/s).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from common import results_path  # benchmarks/common.py (scripts run from their folder)

from jepa_wm.dream import Dream, rollout
from jepa_wm.envs import ActionSpace, EnvSettings
from jepa_wm.memory import MDNRNNModule
from jepa_wm.nets.controller import ControllerPopulation, controller_input_dim, num_params

ACTION = ActionSpace(gym.spaces.Discrete(3)).to_dict()  # VizdoomTakeCover-v1
LATENT = 32


def immortal_memory(hidden: int) -> MDNRNNModule:
    """An M whose dreams never die (done logit -1e4), so every dream runs to the limit."""
    torch.manual_seed(0)
    m = MDNRNNModule(latent_dim=LATENT, action=ACTION, hidden_size=hidden, num_mixtures=5)
    with torch.no_grad():
        m.net.head.weight[-1].zero_()
        m.net.head.bias[-1] = -1e4
    return m.eval()


def population(P: int, hidden: int) -> ControllerPopulation:
    dim = controller_input_dim(LATENT, hidden, False)
    return ControllerPopulation(0.1 * torch.randn(P, num_params(dim, ACTION)), dim, ACTION)


def dream_speed(memory: MDNRNNModule, n: int, steps: int, candidates: int) -> float:
    """Dream steps/s of ``n`` dreams for ``steps`` steps with C (``candidates`` of them)."""
    dream = Dream(memory, torch.randn(100, LATENT), tau=1.15, reward="survival",
                  max_steps=steps)
    pop = population(candidates, memory.net.hidden_size)
    R = max(1, n // candidates)
    rollout(dream, lambda x, i: pop(x, i // R)[1], n, torch.Generator().manual_seed(0))  # warm
    start = time.perf_counter()
    out = rollout(dream, lambda x, i: pop(x, i // R)[1], n, torch.Generator().manual_seed(1))
    return out["steps"] / (time.perf_counter() - start)


def generation_seconds(memory: MDNRNNModule, steps: int = 2100) -> float:
    """Wall time of one CMA-ES generation in the dream: 64 x 16 dreams, ``steps`` each."""
    dream = Dream(memory, torch.randn(100, LATENT), tau=1.15, reward="survival",
                  max_steps=steps)
    pop = population(64, memory.net.hidden_size)
    start = time.perf_counter()
    rollout(dream, lambda x, i: pop(x, i // 16)[1], 64 * 16, torch.Generator().manual_seed(2))
    return time.perf_counter() - start


def real_speed(memory: MDNRNNModule, episodes: int, workers: int) -> float:
    """Real VizDoom agent steps/s with V (the paper's conv encoder), M and C in the loop."""
    from jepa_wm.controller.real import play_real
    from jepa_wm.vision import RandomModule

    vision = RandomModule(latent_dim=LATENT).eval()
    env = EnvSettings("VizdoomTakeCover-v1", image_size=64, frame_skip=1, max_episode_steps=2100)
    pop = population(1, memory.net.hidden_size)
    owners = np.zeros(episodes, dtype=np.int64)
    start = time.perf_counter()
    out = play_real(env, vision, memory, pop, owners, np.arange(episodes), False, workers)
    return out["steps"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer steps (under 2 minutes).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--workers", type=int, default=2, help="Real-env worker processes.")
    parser.add_argument("--hidden", type=int, default=256, help="M's hidden size.")
    parser.add_argument("--out", default=None,
                        help="Results file (default results/dream.md; --quick: dream_quick.md).")
    args = parser.parse_args()
    args.out = str(results_path("dream", args.quick, args.out))
    torch.set_num_threads(args.threads)
    memory = immortal_memory(args.hidden)
    steps = {1: 300 if args.quick else 2000, 64: 200 if args.quick else 1000,
             1024: 50 if args.quick else 300}
    rows = []
    for n, s in steps.items():
        speed = dream_speed(memory, n, s, candidates=min(n, 64))
        rows.append((f"dream, n = {n}", speed))
        print(f"dream n={n:<5} {speed:12,.0f} steps/s", flush=True)
    real = real_speed(memory, 4 if args.quick else 16, args.workers)
    rows.append((f"real VizDoom + V + M + C, {args.workers} workers", real))
    print(f"real          {real:12,.0f} steps/s", flush=True)
    gen = generation_seconds(memory)
    print(f"generation    {gen:12.1f} s (64 x 16 dreams x 2100 steps)", flush=True)
    ratio = rows[2][1] / real
    write_report(Path(args.out), rows, gen, ratio, args)
    print(f"dream_vs_real_ratio: {ratio:.1f}")


def write_report(path: Path, rows, gen: float, ratio: float, args) -> None:
    lines = [
        "# Dream vs real speed (`benchmarks/dream.py`)", "",
        (f"Machine: {platform.processor() or platform.machine()}, torch threads "
         f"{args.threads}, M hidden {args.hidden}, latent {LATENT}, K = 5, "
         f"{'--quick' if args.quick else 'full'} run, {time.strftime('%Y-%m-%d %H:%M')}."), "",
        "| what | steps/s |", "|---|---:|",
        *[f"| {name} | {speed:,.0f} |" for name, speed in rows], "",
        (f"One paper-size CMA-ES generation (64 x 16 dreams, all alive for 2100 steps): "
         f"**{gen:.1f} s** (target <= 15 s)."), "",
        f"dream_vs_real_ratio (n = 1024 over real): **{ratio:.1f}** (target >= 100).", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
