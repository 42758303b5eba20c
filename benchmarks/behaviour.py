"""What does a trained C do? Its action frequencies in the real game and in its dream, and
where it stands in the game (VizDoom take-cover's strafe axis, ``player_y``).

    python benchmarks/behaviour.py RUN [RUN ...] [--episodes 6] [--dreams 256]

``RUN`` is a finished run folder (V, latents, M, C): ``runs/ladder/<rung>/vae/seed0``, or a
round of ``benchmarks/iterate.py`` with ``--round-dir``. Real episodes use env seeds
2,000,000 + i (neither the collection's nor the evaluation's), one env, V, M and C in the
loop exactly as ``evaluate`` plays; dreams are C's own at the training settings. Appends a
row per run to ``benchmarks/results/behaviour.md``.
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED_BASE = 2_000_000


def load(run: Path, round_dir: Path | None):
    from jepa_wm.config import experiment_parser
    from jepa_wm.controller import ControllerFile
    from jepa_wm.stages.train_controller import load_parts

    cfg = experiment_parser().parse_args(["--config", str(run / "config.yaml")])
    src = round_dir or run
    parts = Namespace(latents=str(run / "latents"), memory=str(src / "memory" / "final.ckpt"),
                      vision=str(run / "vision" / "final.ckpt"), data=None)
    memory, vision, latents, store = load_parts(parts)
    return cfg, memory, vision, latents, store, ControllerFile.load(
        src / "controller" / "best.npz")


@torch.no_grad()
def real_behaviour(cfg, vision, memory, controller, episodes: int) -> dict:
    from jepa_wm.controller.real import observe
    from jepa_wm.envs import EnvSettings, state_names

    env = EnvSettings.of(cfg).factory(game_state=True)()
    names = state_names(env)
    pop = controller.population(1)
    n_actions = controller.action.controller_dim
    counts, ys, lengths = np.zeros(n_actions), [], []
    zs, states, hazards, died = [], [], [], []  # per step (z as M sees it), per episode
    noise = torch.Generator().manual_seed(0)
    H = memory.net.hidden_size
    for ep in range(episodes):
        obs, info = env.reset(seed=SEED_BASE + ep)
        h = c = torch.zeros(1, H)
        steps = 0
        while True:
            z = observe(vision, memory, obs[None], partial(torch.randn, generator=noise))
            x = torch.cat([z, h, c] if controller.include_cell else [z, h], -1)
            action, vec = pop(x, torch.zeros(1, dtype=torch.long))
            pred, h, c = memory.net.step(z, vec, h, c)
            zs.append(z[0].numpy())
            hazards.append(float(memory.hazard(pred.done_logit)[0]))
            obs, _, terminated, truncated, info = env.step(int(action[0]))
            states.append(np.asarray(info["state"], np.float64))
            counts[int(action[0])] += 1
            steps += 1
            if "player_y" in names and np.isfinite(info["state"][names.index("player_y")]):
                ys.append(float(info["state"][names.index("player_y")]))
            if terminated or truncated:
                died.append(bool(terminated))
                break
        lengths.append(steps)
    env.close()
    return {"actions": counts / counts.sum(), "length_mean": float(np.mean(lengths)),
            "y_quantiles": np.quantile(ys, [0.05, 0.25, 0.5, 0.75, 0.95]) if ys else None,
            "z": np.stack(zs), "state": np.stack(states), "state_names": names,
            "hazard": np.asarray(hazards), "lengths": np.asarray(lengths),
            "died": np.asarray(died)}


@torch.no_grad()
def dream_behaviour(cfg, memory, latents, store, controller, dreams: int) -> dict:
    """C in ``dreams`` of its dreams at the training settings (``jepa_wm.dream.rollout``):
    action frequencies, lengths, and per live step z (as M sees it) and the hazard the
    step's death is drawn from; ``last_hazard`` is each dream's on its last step."""
    from jepa_wm.controller.cmaes import make_dream
    from jepa_wm.dream import rollout

    dream = make_dream(cfg.controller_train, memory, latents, store)
    pop = controller.population(1)
    counts = torch.zeros(controller.action.controller_dim)
    last = torch.zeros(dreams)
    zs, hazards = [], []

    def policy(x, index):
        action, vec = pop(x, torch.zeros_like(index))
        counts.index_add_(0, action.long(), torch.ones(len(action)))
        return vec

    def on_step(state, hazard):
        alive = state.alive
        zs.append(state.z[alive].clone())
        hazards.append(hazard[alive])
        last[state.index[alive]] = hazard[alive]

    out = rollout(dream, policy, dreams, torch.Generator().manual_seed(1),
                  controller.include_cell, on_step)
    lengths = out["lengths"]
    return {"actions": (counts / counts.sum()).numpy(),
            "length_mean": float(lengths.float().mean()),
            "z": torch.cat(zs).numpy(), "lengths": lengths.numpy(),
            "hazard": torch.cat(hazards).numpy(), "last_hazard": last.numpy(),
            "max_steps": dream.max_steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--round-dir", type=Path, default=None,
                   help="A round folder of benchmarks/iterate.py (its M and C) for one RUN.")
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--dreams", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULTS / "behaviour.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = args.out
    if not out.exists():
        out.write_text(
            "# What C does (`benchmarks/behaviour.py`)\n\nAction frequencies (no-op, "
            "MOVE_RIGHT, MOVE_LEFT on take-cover) of a run's C in real episodes (env seeds "
            f"{SEED_BASE:,} + i, one env, V and M in the loop) and in 256 of its dreams; "
            "the real strafe position (player_y: the walls are at 16 and 752, the start at "
            "384) as 5/25/50/75/95% quantiles over all real steps.\n\n"
            "| run | C | real episodes | real length | real actions | dream length | "
            "dream actions | real y quantiles | command | written |\n"
            "|---|---|---:|---:|---|---:|---|---|---|---|\n")
    for run in args.runs:
        run = run.resolve()
        cfg, memory, vision, latents, store, controller = load(run, args.round_dir)
        real = real_behaviour(cfg, vision, memory, controller, args.episodes)
        dream = dream_behaviour(cfg, memory, latents, store, controller, args.dreams)
        fmt = "/".join(f"{a:.2f}" for a in real["actions"])
        dfmt = "/".join(f"{a:.2f}" for a in dream["actions"])
        yq = ", ".join(f"{y:.0f}" for y in real["y_quantiles"]) if real["y_quantiles"] \
            is not None else "—"
        which = args.round_dir.name if args.round_dir else "the run's"
        shown = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run
        cmd = f"python benchmarks/behaviour.py {shown}" + (
            f" --round-dir {args.round_dir}" if args.round_dir else "")
        row = (f"| {'/'.join(run.parts[-3:])} | {which} | {args.episodes} | "
               f"{real['length_mean']:.0f} | {fmt} | {dream['length_mean']:.0f} | {dfmt} | "
               f"{yq} | `{cmd}` | {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
               f"{cpu_name()}, load {loadavg()} |")
        with open(out, "a") as f:
            f.write(row + "\n")
        print(row, flush=True)


if __name__ == "__main__":
    main()
