"""Final evaluation of C: N real episodes with fixed seeds (vector envs, V and M in the loop)
and N dreams at the training temperature; the dream–real gap is ``dream_mean - real_mean``.

With ``evaluate.taus`` it also reproduces the paper's virtual-vs-actual temperature table
for the one trained M: for each τ a controller is trained in the dream at that τ (same
CMA-ES budget, resumable in ``out/tau-<τ>/``), then scored in the dream at τ and in the
real env.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_wm.controller import ControllerFile, single_thread
from jepa_wm.controller.real import play_real
from jepa_wm.dream import Dream, rollout
from jepa_wm.envs import EnvSettings
from jepa_wm.io import read_json

#: Real evaluation seeds start here: far from the seeds collection and training use.
EVAL_SEED_BASE = 1_000_000_000
WALL_TIME_KEYS = ("wall_time", "wall_time_s", "seconds")


def eval_seeds(seed: int, episodes: int) -> np.ndarray:
    """The fixed env seeds of the final evaluation of run seed ``seed``."""
    return EVAL_SEED_BASE + 10_000 * seed + np.arange(episodes)


def real_scores(env: EnvSettings, seed: int, vision, memory, controller: ControllerFile,
                episodes: int, workers: int, on_episode=None) -> dict:
    """``episodes`` real episodes of ``env`` on the fixed evaluation seeds of run ``seed``:
    ``play_real``'s record (``returns``, ``lengths``, ``died``, ``hazard_sums``)."""
    return play_real(env, vision, memory, controller.population(1),
                     np.zeros(episodes, dtype=np.int64), eval_seeds(seed, episodes),
                     controller.include_cell, workers, on_episode)


def dream_scores(dream: Dream, controller: ControllerFile, episodes: int,
                 seed: int) -> dict[str, np.ndarray]:
    """``episodes`` dreams (one batch) of ``controller``: their ``returns`` and
    ``lengths``. C acts on the dream's kernel (``controller_train.kernel``)."""
    population = controller.population(1, kernel=dream.kernel)
    generator = torch.Generator().manual_seed(EVAL_SEED_BASE + seed)
    out = rollout(dream, lambda x, index: population(x, torch.zeros_like(index))[1], episodes,
                  generator, controller.include_cell)
    return {"returns": out["returns"].numpy(), "lengths": out["lengths"].numpy()}


def death_rates(played: dict, dreamed: dict, max_steps: int) -> dict[str, float]:
    """Deaths per step of C in the game, M's hazard per step along those same real steps,
    and deaths per step in C's dreams (a dream that stops before ``max_steps`` died).

    The dream's survival over the game's is about ``c_death_rate_game / c_death_rate_dream``
    and splits into two factors: ``game / M on the game`` (M's death head where C goes:
    above 1, M underrates the danger of C's real states) times ``M on the game / dream``
    (the dream's own trajectories: above 1, the states C reaches in the dream are safer
    than the ones it reaches in the game)."""
    real_steps = float(played["lengths"].sum())
    dream_lengths = np.asarray(dreamed["lengths"])
    return {"c_death_rate_game": float(played["died"].sum()) / real_steps,
            "c_hazard_rate_game": float(played["hazard_sums"].sum()) / real_steps,
            "c_death_rate_dream": float((dream_lengths < max_steps).sum())
            / float(dream_lengths.sum())}


def stage_wall_times(folders: dict[str, Path]) -> dict[str, float]:
    """Wall time of each finished stage in ``folders`` (stage -> the folder it wrote), from
    its ``DONE.json`` or ``metrics.json`` (the first of ``WALL_TIME_KEYS`` present)."""
    times = {}
    for stage, folder in folders.items():
        for name in ("DONE.json", "metrics.json"):
            path = folder / name
            if not path.exists():
                continue
            info = read_json(path)
            info = info if isinstance(info, dict) else {}
            value = next((info[k] for k in WALL_TIME_KEYS if k in info), None)
            # a stage that records its own inputs' times (iterate) passes them on
            for up, seconds in (info.get("input_wall_time") or {}).items():
                times.setdefault(up, float(seconds))
            if isinstance(value, (int, float)):
                times[stage] = float(value)
                break
    return times


def summary_line(results: dict) -> str:
    """The one-line summary ``evaluate`` prints."""
    return (f"{results['variant']} seed {results['seed']}: real {results['real_mean']:.1f} "
            f"± {results['real_std']:.1f} over {len(results['real_scores'])} episodes, dream "
            f"{results['dream_mean']:.1f} (tau {results['tau']}), gap "
            f"{results['dream_real_gap']:+.1f}" + (
                f"; C's deaths per 1,000 steps: game {1e3 * results['c_death_rate_game']:.2f},"
                f" M's hazard on those steps {1e3 * results['c_hazard_rate_game']:.2f}, dream "
                f"{1e3 * results['c_death_rate_dream']:.2f}"
                if "c_death_rate_dream" in results else ""))


def evaluate(ev: Any, seed: int, env: EnvSettings, vision, memory, controller: ControllerFile,
             dream: Dream, on_episode=None) -> dict:
    """Real and dream scores of one controller -> the core of ``results.json``: the
    ``evaluate`` section's (``ev``) real episodes of ``env`` on the evaluation seeds of run
    ``seed``, and its dreams in ``dream``.

    Beside the scores, M's death calibration where the controller goes:
    ``c_death_sum_per_episode``, M's hazard summed along each of C's real episodes (mean),
    against ``c_deaths_per_episode``, the share of them that ended in a death. The
    fidelity stage measures the head on the data policy's episodes; a head that is
    calibrated there and sums to well under the deaths here rates C's own states safer than
    the game does, a hole CMA-ES found. Equal sums with a dream score far above the real
    one put the hole in the dream's free-running dynamics instead; ``death_rates`` splits
    the dream-real gap into those two factors."""
    start = time.time()
    with single_thread():
        played = real_scores(env, seed, vision, memory, controller, ev.episodes, ev.workers,
                             on_episode)
        real_seconds = time.time() - start
        dreamed = dream_scores(dream, controller, ev.dream_episodes, seed)
    real, dream_returns = played["returns"], dreamed["returns"]
    return {"real_mean": float(real.mean()), "real_std": float(real.std()),
            "real_scores": [float(x) for x in real],
            "real_seeds": [int(s) for s in eval_seeds(seed, ev.episodes)],
            "dream_mean": float(dream_returns.mean()),
            "dream_std": float(dream_returns.std()),
            "dream_real_gap": float(dream_returns.mean() - real.mean()),
            "c_death_sum_per_episode": float(played["hazard_sums"].mean()),
            "c_deaths_per_episode": float(played["died"].mean()),
            "real_death_sums": [float(x) for x in played["hazard_sums"]],
            **death_rates(played, dreamed, dream.max_steps),
            "tau": dream.tau, "real_wall_time": real_seconds}
