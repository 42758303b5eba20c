"""The dream at the paper's M size (issue 14): z 64, LSTM 512, K = 5 mixtures per dimension,
1,024 dreams (a 64 x 16 CMA-ES generation), against a plain step written here.

The baseline is what a straightforward MDN-RNN dream step looks like: ``nn.LSTMCell``, an
``nn.Linear`` head, ``softmax`` over the mixture logits, ``torch.multinomial`` for each
latent dimension's component, ``gather`` and a Gaussian draw, a Bernoulli death. jepa_wm's
step (``Dream.step``: one fused cell matmul on cached weights, the mixture drawn by inverse
CDF from pre-drawn uniforms, done sampled from M's hazard) is timed in the same process,
interleaved with the baseline, in fp32 and with M's two matmuls in bf16
(``Dream(precision="bf16")``). Every dream stays alive (M's done head is switched off) and C
(a linear map of ``[z, h]``) acts every step, as in CMA-ES.

    python benchmarks/dream_paper.py [--steps 200] [--repeats 3] [--threads 2] [--generation]
    python benchmarks/dream_paper.py --profile bf16    # where a step's time goes

Prints ms per step for each and the ratio baseline / ours; ``--generation`` also times one
whole generation (1,024 dreams x 2,100 steps) for each of ours. Writes
``benchmarks/results/dream_paper.md`` with the command, CPU and load.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)
from torch import nn

from jepa_wm.dream import Dream
from jepa_wm.envs import ActionSpace
from jepa_wm.memory import MDNRNNModule
from jepa_wm.nets.controller import ControllerPopulation, controller_input_dim, num_params

D, A, H, K, N, TAU = 64, 3, 512, 5, 1024, 1.15
ACTION = ActionSpace(gym.spaces.Discrete(A)).to_dict()
RESULTS = Path(__file__).parent / "results"


class PlainStep(nn.Module):
    """A plain MDN-RNN dream step: LSTMCell, Linear head, softmax + multinomial per dim."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(D + A, H)
        self.head = nn.Linear(H, 3 * D * K + 2)

    @torch.no_grad()
    def forward(self, z, a, h, c, g: torch.Generator):
        h, c = self.cell(torch.cat([z, a], -1), (h, c))
        y = self.head(h)
        logits = y[:, :D * K].view(N, D, K) / TAU
        mu = y[:, D * K:2 * D * K].view(N, D, K)
        log_sigma = y[:, 2 * D * K:3 * D * K].view(N, D, K)
        probs = torch.softmax(logits, -1)
        k = torch.multinomial(probs.view(-1, K), 1, generator=g).view(N, D, 1)
        z = mu.gather(-1, k).squeeze(-1) + log_sigma.gather(-1, k).squeeze(-1).exp() * \
            math.sqrt(TAU) * torch.randn(N, D, generator=g)
        done = torch.rand(N, generator=g) < torch.sigmoid(y[:, -1])
        return z, h, c, done


def immortal_memory(d: int = D, h: int = H, shared: bool = False) -> MDNRNNModule:
    """An untrained M (z ``d``, LSTM ``h``) whose done head never fires: every dream lives."""
    torch.manual_seed(0)
    m = MDNRNNModule(latent_dim=d, action=ACTION, hidden_size=h, num_mixtures=K,
                     shared_mixture=shared)
    with torch.no_grad():
        m.net.head.weight[-1].zero_()
        m.net.head.bias[-1] = -1e4
    return m.eval()


def controller(d: int = D, h: int = H, candidates: int = 64, kernel: str = "eager"):
    """A random CMA-ES population of C's acting on ``[z, h]`` (``kernel`` as in the dream)."""
    dim = controller_input_dim(d, h, False)
    torch.manual_seed(1)
    return ControllerPopulation(0.1 * torch.randn(candidates, num_params(dim, ACTION)), dim,
                                ACTION, kernel=kernel)


def time_plain(steps: int, pop) -> float:
    """ms per step of the plain step with C in the loop."""
    torch.manual_seed(2)
    plain, g = PlainStep().eval(), torch.Generator().manual_seed(0)
    z, h, c = torch.randn(N, D), torch.zeros(N, H), torch.zeros(N, H)
    owner = torch.arange(N) // 16
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        _, a = pop(torch.cat([z, h], -1), owner)
        z, h, c, _ = plain(z, a, h, c, g)
    return (time.perf_counter() - start) / steps * 1e3


@torch.no_grad()
def time_ours(memory, precision: str, steps: int, pop, n: int = N, kernel: str = "eager"
              ) -> float:
    """ms per step of ``Dream.step`` over ``n`` dreams (16 per candidate of ``pop``) with C
    in the loop (every dream alive), with the ``eager`` or ``fused`` kernels."""
    dream = Dream(memory, torch.randn(100, memory.latent_dim), tau=TAU, done="sample",
                  reward="survival", max_steps=10 ** 6, precision=precision, kernel=kernel)
    state = dream.reset(n, torch.Generator().manual_seed(0))
    owner = torch.arange(n) // 16
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        _, a = pop(state.controller_input(), owner[state.index])
        state, *_ = dream.step(state, a)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="Timed steps per repeat.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved repeats.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--generation", action="store_true",
                        help="Also time one whole generation (2,100 steps) of ours.")
    parser.add_argument("--profile", choices=["32", "bf16"],
                        help="Only print torch.profiler's table of ours at this precision "
                             "(the --steps steps; nothing written).")
    parser.add_argument("--kernel", choices=["eager", "fused"], default="eager",
                        help="The kernels --profile times.")
    parser.add_argument("--out", type=Path, default=RESULTS / "dream_paper.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        memory, pop = immortal_memory(), controller(kernel=args.kernel)
        time_ours(memory, args.profile, 20, pop, kernel=args.kernel)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            ms = time_ours(memory, args.profile, args.steps, pop, kernel=args.kernel)
        print(f"ours {args.profile} {args.kernel}: {ms:.2f} ms per step under the profiler")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        return
    load_start = loadavg()
    memory, pop = immortal_memory(), controller()
    pops = {"eager": pop, "fused": controller(kernel="fused")}  # the same C's
    ours = {f"ours {kernel} {name}": (precision, kernel) for kernel in ("eager", "fused")
            for name, precision in (("fp32", "32"), ("bf16", "bf16"))}
    times: dict[str, list[float]] = {"plain": [], **{name: [] for name in ours}}
    for _ in range(args.repeats):  # interleaved: a load change hits every step alike
        times["plain"].append(time_plain(args.steps, pop))
        for name, (precision, kernel) in ours.items():
            times[name].append(time_ours(memory, precision, args.steps, pops[kernel],
                                         kernel=kernel))
        print("  ".join(f"{k} {v[-1]:.2f} ms" for k, v in times.items()), flush=True)
    best = {k: min(v) for k, v in times.items()}
    generation = {}
    if args.generation:
        for name, (precision, kernel) in ours.items():
            generation[name] = time_ours(memory, precision, 2100, pops[kernel],
                                         kernel=kernel) * 2.1
            print(f"generation {name}: {generation[name]:.1f} s", flush=True)
    lines = [
        "# The dream at the paper's M size (`benchmarks/dream_paper.py`)", "",
        f"- command: `python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}`",
        (f"- {time.strftime('%Y-%m-%d %H:%M')} UTC; {cpu_name()}, torch "
         f"{torch.__version__}, {args.threads} threads; load {load_start} at the start, "
         f"{loadavg()} at the end"),
        (f"- M: z {D}, LSTM {H}, K {K} per dimension, {N} dreams (64 candidates x 16), "
         f"tau {TAU}, C in the loop; every dream alive; {args.steps} steps x "
         f"{args.repeats} interleaved repeats, best repeat shown"), "",
        "| step | ms per step (best) | all repeats | baseline / this |", "|---|---:|---|---:|"]
    for name, ms in best.items():
        lines.append(f"| {name} | {ms:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} |"
                     f" {best['plain'] / ms:.2f} |")
    if generation:
        lines += ["", "| one generation (1,024 dreams x 2,100 steps) | s |", "|---|---:|",
                  *[f"| {k} | {v:.1f} |" for k, v in generation.items()]]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    for name in ours:
        print(f"ratio plain / {name}: {best['plain'] / best[name]:.2f}")


if __name__ == "__main__":
    main()
