"""Controllers in the real env: gymnasium vector envs across cores with V encoding each
frame and M's memory ``h`` in the loop, exactly as C sees the dream (``[z, h]`` with z
standardised by M's latent mean/std). A V with a posterior gives ``z = mu + sigma * eps``,
as Ha's doomreal does and as M was trained and dreams.

Episodes are jobs (a parameter vector and a seed each) handed to whichever env is free, so
every job is played exactly once, whatever the order in which they end.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing

import gymnasium as gym
import numpy as np
import torch

from jepa_wm.controller import single_thread
from jepa_wm.envs import EnvSettings
from jepa_wm.envs.vizdoom import reap_engines
from jepa_wm.nets.controller import ControllerPopulation


def make_real_envs(env: EnvSettings, workers: int) -> gym.vector.VectorEnv:
    """``workers`` copies of ``env``, no auto-reset (each env is reset with the seed of the
    job it takes next)."""
    from jepa_wm.envs.vector import make_vector_env

    return make_vector_env(env.factory(), workers)


def job_noise_seed(env_seed: int) -> int:
    """The seed of the z noise of the real episode played on env seed ``env_seed``."""
    return int(np.random.SeedSequence([int(env_seed), 2]).generate_state(1)[0])


def observe(vision, memory, obs, draw: Callable[[torch.Size], torch.Tensor]) -> torch.Tensor:
    """Frames ``(N, H, W, C)`` uint8 -> the z C and M see: V's mean, plus ``sigma * draw(shape)``
    when V has a posterior, standardised by M's latent mean/std. The one place the real loop
    (evaluation, checks, iterative collection, ``benchmarks/behaviour.py``) turns a frame
    into a latent, so all play C exactly as the dream was trained."""
    z, sigma = vision.encode_dist(torch.from_numpy(np.asarray(obs)))
    if sigma is not None:
        z = z + sigma * draw(z.shape)
    return memory.standardise(z.float())


@torch.no_grad()
@single_thread()  # the env worker processes take the other cores
def play_real(env: EnvSettings, vision, memory, population: ControllerPopulation,
              owners: np.ndarray, seeds: np.ndarray, include_cell: bool = False, workers: int = 2,
              on_episode: Callable[[int, float], None] | None = None) -> dict:
    """Play one real episode per job of ``env``: job j uses candidate ``owners[j]`` of
    ``population``, env seed ``seeds[j]`` and V's posterior noise from a stream of its own
    (``job_noise_seed``): a job's episode is the same whatever ``workers`` is.

    Returns ``returns`` ``(J,)`` float, ``lengths`` ``(J,)`` int, ``steps`` (agent steps
    taken in all), ``died`` ``(J,)`` bool (the episode terminated, not truncated) and
    ``hazard_sums`` ``(J,)``: M's death hazard summed along each episode as it was played,
    i.e. M teacher-forced on the controller's own real episodes (a head calibrated where
    the controller goes sums to ``died``'s mean). ``on_episode(j, return)`` is called as
    each job ends (progress bars); it plays on one torch thread.
    """
    J = len(owners)
    W = max(1, min(workers, J))
    H = memory.net.hidden_size
    returns, lengths = np.zeros(J), np.zeros(J, dtype=np.int64)
    hazard_sums, died = np.zeros(J), np.zeros(J, dtype=bool)
    job = np.arange(W)  # job each env is playing; -1 = idle (no jobs left)
    next_job, steps = W, 0
    # each job draws its z noise from its own stream, so its episode does not depend on
    # how many envs play the jobs or which one takes it (``workers`` changes only speed)
    noise = [torch.Generator().manual_seed(job_noise_seed(seeds[j])) for j in job]

    def draw(shape: torch.Size) -> torch.Tensor:
        return torch.stack([torch.randn(shape[1:], generator=g) for g in noise])

    with reap_engines(), closing(make_real_envs(env, W)) as envs:
        obs, _ = envs.reset(seed=[int(seeds[j]) for j in job])
        h, c = torch.zeros(W, H), torch.zeros(W, H)
        while (job >= 0).any():
            z = observe(vision, memory, obs, draw)
            x = torch.cat([z, h, c] if include_cell else [z, h], dim=-1)
            owner = torch.as_tensor(owners[np.maximum(job, 0)], dtype=torch.long)
            env_action, vec = population(x, owner)
            pred, h, c = memory.net.step(z, vec, h, c)
            hazard = memory.hazard(pred.done_logit).double().numpy()
            obs, reward, terminated, truncated, _ = envs.step(env_action.numpy())
            active = job >= 0
            returns[job[active]] += reward[active]
            hazard_sums[job[active]] += hazard[active]
            lengths[job[active]] += 1
            steps += int(active.sum())
            ended = np.asarray(terminated) | np.asarray(truncated)
            if ended.any():
                reset_seeds = [None] * W
                for i in np.flatnonzero(ended):
                    if job[i] >= 0:
                        died[job[i]] = bool(terminated[i])
                        if on_episode is not None:
                            on_episode(int(job[i]), float(returns[job[i]]))
                    job[i] = next_job if next_job < J else -1
                    next_job += job[i] >= 0
                    reset_seeds[i] = int(seeds[job[i]]) if job[i] >= 0 else None
                    if job[i] >= 0:
                        noise[i].manual_seed(job_noise_seed(seeds[job[i]]))
                    h[i], c[i] = 0.0, 0.0
                obs, _ = envs.reset(seed=reset_seeds, options={"reset_mask": ended})
    return {"returns": returns, "lengths": lengths, "steps": steps, "died": died,
            "hazard_sums": hazard_sums}
