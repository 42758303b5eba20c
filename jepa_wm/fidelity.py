"""Dream fidelity: is M's dream a faithful simulator of the game? Measured on episodes M
never trained on (its validation split), before any CMA-ES is spent on it.

- ``death_calibration``: M teacher-forced on each held-out episode from a zero state (as
  the real game feeds it): the hazard summed per episode against the deaths observed, the
  Brier score, a reliability table, and where in an episode the hazard sits.
- ``policy_survival``: the data's own policy (uniform random actions held 1..max_hold
  steps) played in the dream against its real episodes: the ratio of mean survivals is 1
  in a faithful dream.
- ``hold_survival``: each action held for a whole episode ("always left") in the dream
  against the same policy in the game. The controllers that fail run into a wall and stay
  there, a state random data rarely holds for long: a dream that rates a hold safer than
  the game (ratio > 1) is one CMA-ES can exploit.
- ``touching``: where the game recorded it (VizDoom stores' ``fireball_dist``), M's
  hazard on the steps a fireball touches the player (nearest one closer than
  ``TOUCHING``), where most deaths happen, against the game's deaths there: a head
  that sees the hit coming has a ratio near 1, a blurry one well below; and the share
  of M's whole hazard on those steps against the share of the game's deaths there, which
  does not move with the head's overall calibration.
- ``open_loop_error``: M rolled forward on the real actions from a teacher-forced state,
  its predicted mean z against the real z at horizons 1, 10, 50, 200, beside copying the
  last real z.

All in M's standardised latent space; z fed to M is ``mu + sigma * eps`` for a V with a
posterior (what train-memory and the real game feed it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from jepa_wm.dream import Dream, rollout
from jepa_wm.envs.vizdoom import TOUCHING
from jepa_wm.memory import MDNRNNModule
from jepa_wm.nets.mdnrnn import MDNOutput

HORIZONS = (1, 10, 50, 200)
#: Upper edges of the reliability table's hazard bins.
BIN_EDGES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
#: Open-loop rollouts start every this many steps of a held-out episode.
OPEN_LOOP_EVERY = 50
#: Env seeds of the real hold-one-action episodes of run seed s: base + 10,000 s + i (apart
#: from the evaluation's seeds, ``controller.evaluate.eval_seeds``).
HOLD_SEED_BASE = 3_000_000


def mixture_mean(pred: MDNOutput) -> torch.Tensor:
    """The mean of M's predicted mixture ``(..., D)``."""
    pi = torch.softmax(pred.logit_pi, -1)
    if pi.dim() < pred.mu.dim():  # shared mixture weights: (..., K) -> (..., 1, K)
        pi = pi.unsqueeze(-2)
    return (pi * pred.mu).sum(-1)


def episode_batch(memory: MDNRNNModule, latents, store, episodes: Sequence[int],
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """Held-out episodes padded to the longest: standardised ``z`` (sampled, as fed to M)
    and ``z_mean`` (the posterior mean) ``(E, T, D)``, action vectors ``a`` ``(E, T, A)``,
    ``done`` ``(E, T)`` (terminations), ``lengths`` ``(E,)``, and ``rows`` ``(E, T)``: the
    store's frame index of each step (a short episode repeats its last frame)."""
    episodes = np.asarray(episodes, dtype=np.int64)
    starts, lengths = store.episode_starts[episodes], store.episode_lengths[episodes]
    T = int(lengths.max())
    idx = starts[:, None] + np.minimum(np.arange(T), lengths[:, None] - 1)
    flat = idx.ravel()
    rng = np.random.default_rng(seed)
    z = torch.as_tensor(latents.sample(flat, rng)).reshape(*idx.shape, -1)
    z_mean = torch.as_tensor(np.asarray(latents.z[flat], np.float32)).reshape(*idx.shape, -1)
    a = memory.action.vector(torch.as_tensor(store.actions(flat)))
    done = torch.as_tensor(store.terminated(flat).astype(np.float32)).reshape(idx.shape)
    valid = torch.as_tensor(np.arange(T)[None] < lengths[:, None])
    return {"z": memory.standardise(z), "z_mean": memory.standardise(z_mean),
            "a": a.reshape(*idx.shape, -1), "done": done * valid,
            "lengths": torch.as_tensor(lengths), "valid": valid,
            "rows": torch.as_tensor(idx)}


@torch.no_grad()
def teacher_forced(memory: MDNRNNModule, batch: dict, keep_states_at: torch.Tensor | None = None
                   ) -> dict[str, torch.Tensor]:
    """M stepped along real episodes from a zero state: ``hazard`` ``(E, T)`` and, when
    ``keep_states_at`` ``(E, T)`` bool is given, the ``(h, c)`` after each marked step."""
    net = memory.net
    E, T, _ = batch["z"].shape
    h, c = net.initial_state(E)
    hazards, kept_h, kept_c = [], [], []
    for t in range(T):
        pred, h, c = net.step(batch["z"][:, t], batch["a"][:, t], h, c)
        hazards.append(memory.hazard(pred.done_logit))
        if keep_states_at is not None and keep_states_at[:, t].any():
            rows = keep_states_at[:, t]
            kept_h.append(h[rows])
            kept_c.append(c[rows])
    out = {"hazard": torch.stack(hazards, 1) * batch["valid"]}
    if keep_states_at is not None:
        out["h"] = torch.cat(kept_h) if kept_h else torch.zeros(0, net.hidden_size)
        out["c"] = torch.cat(kept_c) if kept_c else torch.zeros(0, net.hidden_size)
    return out


def death_calibration(hazard: torch.Tensor, batch: dict) -> dict:
    """Calibration of the teacher-forced hazard ``(E, T)`` against the real deaths."""
    valid, done, lengths = batch["valid"], batch["done"], batch["lengths"]
    p, y = hazard[valid].double(), done[valid].double()
    per_episode = hazard.sum(1).double()
    rows, lo = [], 0.0
    for hi in BIN_EDGES:
        sel = (p >= lo) & (p < hi) if hi < 1.0 else (p >= lo)
        n = int(sel.sum())
        rows.append({"bin": [lo, hi], "steps": n,
                     "predicted": float(p[sel].mean()) if n else math.nan,
                     "observed": float(y[sel].mean()) if n else math.nan})
        lo = hi
    t = torch.arange(hazard.shape[1])[None]
    from_end = lengths[:, None] - 1 - t  # 0 on each episode's last step
    died = done.sum(1) > 0  # the windows before an end only mean something at a death
    last2 = valid & (from_end < 2) & died[:, None]
    lead = valid & (from_end >= 2) & (from_end < 32) & died[:, None]
    early = valid & (from_end >= 32)
    return {"death_sum_per_episode": float(per_episode.mean()),
            "deaths_per_episode": float(done.sum(1).double().mean()),
            "death_sum_std": float(per_episode.std()) if len(per_episode) > 1 else math.nan,
            "brier": float(((p - y) ** 2).mean()),
            "brier_constant": float(((y.mean() - y) ** 2).mean()),
            "hazard_last2": float(hazard[last2].mean()) if last2.any() else math.nan,
            "hazard_lead30": float(hazard[lead].mean()) if lead.any() else math.nan,
            "hazard_early": float(hazard[early].mean()) if early.any() else math.nan,
            "reliability": rows}


def held_random_policy(action, max_hold: int, n: int, generator: torch.Generator):
    """The data's policy for ``n`` dreams: a uniform random action held for a uniform
    1..max_hold steps, then a new one; ``policy(x, index) -> actions`` for ``rollout``.
    ``action``: the ``ActionSpace`` (Discrete or a 1-D Box)."""
    from jepa_wm.envs.actions import ActionSpace

    space = ActionSpace.of(action)
    space.check_controller()
    discrete = space.discrete
    left = torch.zeros(n, dtype=torch.long)
    if discrete:
        current = torch.zeros(n, dtype=torch.long)
        count, start = int(space.space.n), int(space.space.start)
    else:
        low = torch.as_tensor(space.space.low, dtype=torch.float32)
        high = torch.as_tensor(space.space.high, dtype=torch.float32)
        current = torch.zeros(n, len(low))

    def policy(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        new = index[left[index] == 0]
        if len(new):
            if discrete:
                current[new] = start + torch.randint(count, (len(new),), generator=generator)
            else:
                u = torch.rand(len(new), len(low), generator=generator)
                current[new] = low + u * (high - low)
            left[new] = torch.randint(1, max_hold + 1, (len(new),), generator=generator)
        left[index] -= 1
        return current[index]

    return policy


def policy_survival(dream: Dream, real_lengths: np.ndarray, max_hold: int, n: int,
                    seed: int) -> dict:
    """The data policy's survival in ``n`` dreams against its ``real_lengths`` (the held-out
    episodes' lengths, capped at the dream's step limit)."""
    generator = torch.Generator().manual_seed(seed)
    policy = held_random_policy(dream.action, max_hold, n, generator)
    lengths = rollout(dream, policy, n, generator)["lengths"].numpy()
    real = np.minimum(np.asarray(real_lengths), dream.max_steps)
    return {"policy_survival_dream": float(lengths.mean()),
            "policy_survival_dream_median": float(np.median(lengths)),
            "policy_survival_real": float(real.mean()),
            "policy_survival_real_median": float(np.median(real)),
            "policy_survival_ratio": float(lengths.mean() / max(real.mean(), 1e-9)),
            "policy_dreams": int(n), "policy_real_episodes": len(real)}


@functools.lru_cache(maxsize=8)
def real_hold_lengths(env: str, image_size: int, frame_skip: int, max_episode_steps: int,
                      episodes: int, seed: int) -> dict[int, np.ndarray]:
    """Real episode lengths of each action of a Discrete env held for a whole episode,
    ``episodes`` per action on the env seeds ``HOLD_SEED_BASE + 10,000 seed + i``; ``{}``
    for other action spaces. One env in this process, closed before returning; the result
    depends on nothing else, so it is kept (an iterate stage measures several M's)."""
    import gymnasium as gym

    from jepa_wm.envs import make_env

    game = make_env(env, image_size=image_size, frame_skip=frame_skip,
                    max_episode_steps=max_episode_steps)
    try:
        space = game.action_space
        if not isinstance(space, gym.spaces.Discrete):
            return {}
        out = {}
        for a in range(int(space.start), int(space.start + space.n)):
            lengths = []
            for i in range(episodes):
                game.reset(seed=HOLD_SEED_BASE + 10_000 * seed + i)
                steps, done = 0, False
                while not done:
                    _, _, terminated, truncated, _ = game.step(np.int64(a))
                    steps, done = steps + 1, terminated or truncated
                lengths.append(steps)
            out[a] = np.asarray(lengths)
        return out
    finally:
        game.close()


def hold_survival(dream: Dream, real: dict[int, np.ndarray], n: int, seed: int) -> dict:
    """Each action held for a whole episode in ``n`` dreams against ``real`` (action -> the
    real lengths of the same policy, ``real_hold_lengths``): per action the dream and real
    mean survival and their ratio, and the largest ratio (the hold the dream overrates most)."""
    out = {"hold_survival_dream": {}, "hold_survival_real": {}, "hold_survival_ratio": {}}
    for a, lengths in real.items():
        generator = torch.Generator().manual_seed(seed)
        dreamt = rollout(dream, lambda x, index, a=a: torch.full((len(index),), a), n,
                         generator)["lengths"].numpy()
        real_mean = float(np.minimum(lengths, dream.max_steps).mean())
        out["hold_survival_dream"][str(a)] = float(dreamt.mean())
        out["hold_survival_real"][str(a)] = real_mean
        out["hold_survival_ratio"][str(a)] = float(dreamt.mean() / max(real_mean, 1e-9))
    if real:
        worst = max(out["hold_survival_ratio"], key=out["hold_survival_ratio"].get)
        out.update(hold_survival_ratio_max=out["hold_survival_ratio"][worst],
                   hold_survival_action_max=int(worst),
                   hold_real_episodes=len(next(iter(real.values()))))
    return out


def open_loop_starts(batch: dict) -> torch.Tensor:
    """``(E, T)`` bool: the steps open-loop rollouts start from (every ``OPEN_LOOP_EVERY``
    steps of each episode that have a next step)."""
    t = torch.arange(batch["z"].shape[1])[None]
    return (t % OPEN_LOOP_EVERY == 0) & (t < batch["lengths"][:, None] - 1)


@torch.no_grad()
def open_loop_error(memory: MDNRNNModule, batch: dict, tf: dict | None = None,
                    horizons: Sequence[int] = HORIZONS) -> dict:
    """M's predicted mean z rolled forward on the real actions, against the real (mean) z,
    from a start every ``OPEN_LOOP_EVERY`` steps of each episode (the state there from
    teacher forcing: ``tf``, ``teacher_forced``'s output kept at ``open_loop_starts``, is
    computed when not given); and copying the start's z. MSE per dim, standardised units."""
    lengths, T = batch["lengths"], batch["z"].shape[1]
    H = max(horizons)
    starts = open_loop_starts(batch)
    if tf is None:
        tf = teacher_forced(memory, batch, keep_states_at=starts)
    # the state after step t0 has seen z_t0 and a_t0: the prediction is for z_{t0+1}
    ep, t0 = torch.nonzero(starts, as_tuple=True)  # row-major, the order states were kept
    order = torch.argsort(t0 * len(lengths) + ep)  # teacher_forced kept them time-major
    ep, t0 = ep[order], t0[order]
    h, c = tf["h"], tf["c"]
    z_real, a = batch["z_mean"], batch["a"]
    z_copy = z_real[ep, t0]
    sums = {k: [0.0, 0.0, 0] for k in horizons}
    pred = memory.net.split_head(memory.net.head(h))
    z = mixture_mean(pred)
    for k in range(1, H + 1):
        tk = t0 + k
        ok = tk < lengths[ep]
        if k in sums and ok.any():
            target = z_real[ep[ok], tk[ok]]
            sums[k][0] += float(((z[ok] - target) ** 2).mean(-1).sum())
            sums[k][1] += float(((z_copy[ok] - target) ** 2).mean(-1).sum())
            sums[k][2] += int(ok.sum())
        if k == H or not ok.any():
            break
        step_a = a[ep, tk.clamp(max=T - 1)]
        pred, h, c = memory.net.step(z, step_a, h, c)
        z = mixture_mean(pred)
    out = {}
    for k, (model, copy, n) in sums.items():
        out[f"open_loop_mse_{k}"] = model / n if n else math.nan
        out[f"copy_mse_{k}"] = copy / n if n else math.nan
        out[f"open_loop_starts_{k}"] = n
    return out


def touching(hazard: torch.Tensor, batch: dict, store) -> dict:
    """M's hazard per step where a fireball touches the player (``TOUCHING``) against
    the game's deaths per step there, and their ratio; and the share of M's whole hazard
    that falls on those steps against the share of the game's deaths there (a blurry head
    spreads its deaths onto steps where nothing hits, whatever its overall calibration).
    Empty for a store that records no ``fireball_dist``."""
    names = list(getattr(store, "state_names", None) or ())
    if "fireball_dist" not in names:
        return {}
    valid = batch["valid"]
    dist = store.get("state", batch["rows"][valid].numpy())[:, names.index("fireball_dist")]
    near = torch.as_tensor(np.nan_to_num(dist, nan=np.inf) < TOUCHING)
    if not near.any():
        return {}
    h, done = hazard[valid].double(), batch["done"][valid].double()
    m, game = float(h[near].mean()), float(done[near].mean())
    return {"touching_steps": float(near.double().mean()), "touching_hazard": m,
            "touching_deaths": game, "touching_ratio": m / game if game > 0 else math.nan,
            "touching_share": float(h[near].sum() / h.sum()),
            "touching_death_share": float(done[near].sum() / done.sum())
            if done.sum() > 0 else math.nan}


def measure(memory: MDNRNNModule, dream: Dream, latents, store, episodes: Sequence[int],
            max_hold: int, dreams: int = 1024, seed: int = 0,
            hold_real: dict[int, np.ndarray] | None = None) -> dict:
    """Every fidelity figure of M on the held-out ``episodes``, one flat dict (plus the
    ``reliability`` table and, given ``hold_real`` (``real_hold_lengths``), the per-action
    hold survival)."""
    batch = episode_batch(memory, latents, store, episodes, seed)
    out = {"episodes": len(episodes), "tau": dream.tau, "done": dream.done_mode,
           "max_steps": dream.max_steps}
    tf = teacher_forced(memory, batch, keep_states_at=open_loop_starts(batch))  # one pass
    out.update(death_calibration(tf["hazard"], batch))
    out.update(touching(tf["hazard"], batch, store))
    out.update(policy_survival(dream, store.episode_lengths[np.asarray(episodes)], max_hold,
                               dreams, seed))
    out.update(open_loop_error(memory, batch, tf))
    if hold_real:
        out.update(hold_survival(dream, hold_real, dreams, seed))
    return out
