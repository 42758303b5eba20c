"""The dream: M run as a simulator (Ha & Schmidhuber 2018, "training inside the dream").

``Dream`` steps n dreams as one batch: one LSTM-cell matmul, one head matmul and one
mixture sample per step for all of them, with finished dreams dropped from the batch
(compaction) so the cost follows the live dreams. All noise for a step is drawn for all
n dreams and then indexed, so a dream's trajectory depends only on its seed and its own
actions, never on which other dreams are still alive. ``DreamEnv`` wraps one dream as a
gymnasium env.

A dream can run one M as the world and another as C's memory (``observer``): the world
M draws the next z and the deaths, the observer M only updates the h that C reads, as it
does in the real game. A C trained with one M can then be played in another M's dream
(on the same V's latents): ``benchmarks/exploit.py`` asks whether a new M still falls for
the old C's exploits.

Latents are in M's standardised space. A dream starts from a zero LSTM state at a real
latent (an episode's first frame by default); for a V with a posterior the start is
``mu + sigma * eps``, drawn the way M was trained. Deaths come from M's ``hazard`` (the
done head with any class weight undone), sampled or thresholded. Reward: ``"head"`` uses M's reward head;
``"survival"`` gives +1 per step survived, the take-cover reward (the paper's dream
return is the survival time), so the return does not depend on a learned reward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from jepa_wm.io import UserError
from jepa_wm.memory import MDNRNNModule
from jepa_wm.nets.mdnrnn import check_tau, sample_gmm

DONE_MODES = ("threshold", "sample")
REWARD_MODES = ("head", "survival")
START_MODES = ("episode", "random")
PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16}
KERNELS = ("eager", "fused")


@dataclass
class DreamState:
    """The live rows of a batch of ``n`` dreams.

    z: current latent ``(N, D)``; h, c: LSTM state ``(N, H)``; index: which of the n dreams
    each row is ``(N,)`` int64; alive: ``(N,)`` bool (all True when compacting); t: steps
    taken; n: dreams in the batch; generator: the batch's noise source; view: ``(z, h, c)``
    as C's own M sees them when the dream has an observer (z in the observer's
    standardisation, its LSTM state), else None (C sees z, h, c).
    """

    z: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor
    index: torch.Tensor
    alive: torch.Tensor
    t: int
    n: int
    generator: torch.Generator
    view: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def live(self) -> int:
        """Number of dreams still running."""
        return int(self.alive.sum())

    def controller_input(self, include_cell: bool = False) -> torch.Tensor:
        """What C sees: ``[z, h]`` ``(N, D + H)`` (``[z, h, c]`` with the cell state), from
        the observer M when the dream has one."""
        z, h, c = self.view if self.view is not None else (self.z, self.h, self.c)
        return torch.cat([z, h, c] if include_cell else [z, h], dim=-1)


class Dream:
    """A batched simulator over M.

    Args:
        memory: The trained (or untrained) M.
        starts: Candidate starting latents, standardised, ``(S, D)``; ``reset`` draws from
            them.
        tau: Temperature (mixture logits / tau, sigmas * sqrt(tau)).
        done: ``threshold`` (done when the hazard > ``done_threshold``, the paper's rule)
            or ``sample`` (a Bernoulli draw of the hazard each step).
        reward: ``head`` (M's reward head) or ``survival`` (+1 per step).
        max_steps: Time limit: a dream ends after this many steps.
        compact: Drop finished dreams from the batch, down to ``batch_size`` rows (off
            only to check that it changes nothing, and for ``DreamEnv``).
        start_sigma: Posterior sigma of each start, standardised, ``(S, D)``: a dream starts
            at ``starts + start_sigma * eps`` (None = at ``starts``).
        done_threshold: The hazard above which ``threshold`` ends a dream (0.5 as the
            paper; Ha's x10-weighted head at 0.5 is a hazard of 1/11).
        precision: ``32`` (fp32) or ``bf16``: M's two matmuls per step in bf16 on cached
            bf16 weights (state and sampling stay fp32; ``MDNRNN.step``).
        observer: Another M (same latent size and actions, trained on the same V) that
            plays C's memory: C reads its h and z in its standardisation, as a C trained
            with it reads them in the real game; ``memory`` is the world (next z, deaths).
            None: ``memory`` is both.
        kernel: ``eager`` (torch ops) or ``fused``: the cell's nonlinearities and the
            mixture draw in two C++ kernels built on first use (``jepa_wm.nets.fused``;
            needs g++), the same numbers to float rounding.
    """

    def __init__(self, memory: MDNRNNModule, starts: torch.Tensor, tau: float = 1.0,
                 done: str = "threshold", reward: str = "head", max_steps: int = 2100,
                 compact: bool = True, start_sigma: torch.Tensor | None = None,
                 done_threshold: float = 0.5, precision: str = "32",
                 observer: MDNRNNModule | None = None, kernel: str = "eager"):
        for name, value, accepted in (("done", done, DONE_MODES),
                                      ("reward", reward, REWARD_MODES),
                                      ("precision", precision, tuple(PRECISIONS)),
                                      ("kernel", kernel, KERNELS)):
            if value not in accepted:
                raise UserError(f"dream {name}: {value!r}; accepted: {', '.join(accepted)}")
        if max_steps < 1:
            raise UserError(f"dream max_steps: {max_steps}; accepted: an integer >= 1")
        starts = torch.as_tensor(starts, dtype=torch.float32)
        if starts.ndim != 2 or starts.shape[1] != memory.latent_dim or len(starts) == 0:
            raise UserError(f"dream starts: shape {tuple(starts.shape)}; expected (S, "
                            f"{memory.latent_dim}) with S >= 1")
        if start_sigma is not None:
            start_sigma = torch.as_tensor(start_sigma, dtype=torch.float32)
            if start_sigma.shape != starts.shape:
                raise UserError(f"dream start_sigma: shape {tuple(start_sigma.shape)}; expected "
                                f"{tuple(starts.shape)}, the shape of starts")
        if not 0 < done_threshold < 1:
            raise UserError(f"dream done_threshold: {done_threshold}; accepted: a number in "
                            "(0, 1)")
        self.start_sigma, self.done_threshold = start_sigma, float(done_threshold)
        self.memory, self.net = memory.eval(), memory.net
        self.action = memory.action
        self.starts = starts
        self.tau = check_tau(tau)
        self.done_mode, self.reward_mode = done, reward
        self.max_steps, self.compact = max_steps, compact
        self.precision, self.matmul_dtype = precision, PRECISIONS[precision]
        self.kernel = kernel
        if kernel == "fused":  # build (or load) the kernels now: a missing compiler fails here
            from jepa_wm.nets.fused import ops

            ops()
        self.observer = None if observer is None else observer.eval()
        if observer is not None:
            if observer.latent_dim != memory.latent_dim or observer.action != memory.action:
                raise UserError(f"dream observer: an M of z {observer.latent_dim} and actions "
                                f"{observer.action}; the world M has z {memory.latent_dim} "
                                f"and {memory.action}: both must be trained on one V's "
                                "latents of one env")
            # world-standardised z -> the observer's standardisation (both of one V's z)
            self._view_scale = memory.latent_std / observer.latent_std
            self._view_shift = (memory.latent_mean - observer.latent_mean) / observer.latent_std

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    @property
    def hidden_size(self) -> int:
        return self.net.hidden_size

    @torch.no_grad()
    def reset(self, n: int, generator: torch.Generator | None = None,
              seed: int | None = None) -> DreamState:
        """Start ``n`` dreams from starting latents drawn (with replacement) from ``starts``.

        Give a ``generator`` or a ``seed`` for a reproducible batch.
        """
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(int(torch.seed() if seed is None else seed))
        pick = torch.randint(len(self.starts), (n,), generator=generator)
        z = self.starts[pick].clone()
        if self.start_sigma is not None:
            z += self.start_sigma[pick] * torch.randn(z.shape, generator=generator)
        h, c = self.net.initial_state(n)
        view = None
        if self.observer is not None:
            view = (self._to_view(z), *self.observer.net.initial_state(n))
        return DreamState(z, h, c, torch.arange(n),
                          torch.ones(n, dtype=torch.bool), 0, n, generator, view)

    def _to_view(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._view_scale + self._view_shift

    @torch.no_grad()
    def step(self, state: DreamState, action: torch.Tensor, info: dict | None = None
             ) -> tuple[DreamState, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every row of ``state`` by one step.

        ``action``: ``(N, A)`` action vectors (or Discrete indices ``(N,)``) for the N rows
        of ``state``. Returns ``(next_state, z, reward, done)`` where ``z`` ``(N, D)``,
        ``reward`` ``(N,)``, ``done`` ``(N,)`` bool are for the rows of the *given* state
        (rows already finished, kept when not compacting or as padding, get reward 0 and
        done True); when compacting, ``next_state`` holds the unfinished rows and as many
        finished ones as ``batch_size`` pads them with. A dict given as
        ``info`` gets ``hazard`` ``(N,)``: the hazard this step's death was drawn from.
        """
        a = self.action.vector(torch.as_tensor(action))
        D, n, g = self.latent_dim, state.n, state.generator
        # noise for all n dreams, then the live rows': the same draws with or without
        # compaction
        u_mix = torch.rand(n, 1 if self.net.shared_mixture else D, generator=g)
        eps = torch.randn(n, D, generator=g)
        u_done = torch.rand(n, generator=g)
        if len(state.index) < n:  # rows were dropped (with every row there, index = arange)
            u_mix, eps, u_done = u_mix[state.index], eps[state.index], u_done[state.index]
        if self.kernel == "fused":
            z, head_reward, done_logit, h, c = self.net.dream_step(
                state.z, a, state.h, state.c, self.matmul_dtype, self.tau, u_mix, eps)
        else:
            pred, h, c = self.net.step(state.z, a, state.h, state.c, self.matmul_dtype)
            z = sample_gmm(pred, self.tau, uniform=u_mix, normal=eps)
            head_reward, done_logit = pred.reward, pred.done_logit
        p_done = self.memory.hazard(done_logit)
        if info is not None:
            info["hazard"] = p_done
        died = p_done > self.done_threshold if self.done_mode == "threshold" else u_done < p_done
        reward = torch.ones_like(p_done) if self.reward_mode == "survival" else head_reward
        t = state.t + 1
        done = died | (t >= self.max_steps) | ~state.alive
        reward = torch.where(state.alive, reward, torch.zeros_like(reward))
        view = None
        if state.view is not None:  # C's memory steps on what C saw and did, as in the game
            vz, vh, vc = state.view
            vh, vc = self.observer.net.cell(vz, a, vh, vc, self.matmul_dtype,
                                            fused=self.kernel == "fused")
            view = (self._to_view(z), vh, vc)
        nxt = replace(state, z=z, h=h, c=c, alive=~done, t=t, view=view)
        keep = self._rows_to_keep(done) if self.compact else None
        if keep is not None:
            nxt = replace(nxt, z=z[keep], h=h[keep], c=c[keep], index=state.index[keep],
                          alive=nxt.alive[keep],
                          view=None if view is None else tuple(v[keep] for v in view))
        return nxt, z, reward, done

    @staticmethod
    def _rows_to_keep(done: torch.Tensor) -> torch.Tensor | None:
        """Compaction: the rows of the next state (a mask over ``done``'s), or None to
        keep them all. The live rows, padded with finished ones to ``batch_size(live)``."""
        live = int(done.numel() - done.sum())
        size = batch_size(live)
        if size >= len(done):
            return None
        keep = ~done
        keep[torch.nonzero(done).flatten()[:size - live]] = True
        return keep


def batch_size(live: int) -> int:
    """The rows a compacted dream batch keeps for ``live`` running dreams: ``live``
    rounded up to a multiple of an eighth of the power of two below it (exact under 16),
    finished dreams filling the rest (they compute, and count for nothing). A generation's
    batch then takes a few dozen sizes, not one per death: oneDNN builds a kernel for each
    new matmul shape, about 4 ms for M's bf16 gate matmul against 0.6 ms for the matmul
    itself (``benchmarks/results/speed.md`` §2)."""
    if live < 16:
        return live
    step = 1 << (live.bit_length() - 4)
    return -(-live // step) * step


Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def rollout(dream: Dream, policy: Policy, n: int, generator: torch.Generator,
            include_cell: bool = False,
            on_step: Callable[[DreamState, torch.Tensor], None] | None = None
            ) -> dict[str, torch.Tensor | int]:
    """Run ``n`` dreams to their ends with ``policy(x, index) -> action vectors``
    (``x`` ``(N, in)`` controller inputs of the batch's rows, ``index`` their dream ids;
    rows of finished dreams kept as padding act for nothing).

    ``on_step(state, hazard)``, when given, sees every step's rows before they move and the
    hazard their death is drawn from (what a benchmark reads along the dreams); rows of
    finished dreams kept as padding (``batch_size``) have ``state.alive`` False.
    Returns ``returns`` ``(n,)``, ``lengths`` ``(n,)`` and ``steps`` (dream steps taken).
    """
    state = dream.reset(n, generator)
    returns = torch.zeros(n)
    lengths = torch.zeros(n, dtype=torch.long)
    steps = 0
    while state.live > 0:
        index, alive = state.index, state.alive
        action = policy(state.controller_input(include_cell), index)
        info = {} if on_step is not None else None
        nxt, _, reward, _ = dream.step(state, action, info)
        if on_step is not None:
            on_step(state, info["hazard"])
        state = nxt
        returns.index_add_(0, index, reward)
        lengths.index_add_(0, index, alive.long())
        steps += int(alive.sum())
    return {"returns": returns, "lengths": lengths, "steps": steps}


def dream_starts(latents, memory: MDNRNNModule, start: str = "episode",
                 store=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Standardised starting latents ``(S, D)`` and their standardised posterior sigma
    (``(S, D)``, or None for a V without one): every episode's first frame (``episode``,
    needs the rollout ``store``) or every frame (``random``)."""
    if start not in START_MODES:
        raise UserError(f"dream start: {start!r}; accepted: {', '.join(START_MODES)}")
    if start == "episode":
        if store is None:
            raise UserError("dream start 'episode': needs the rollout store of the latents")
        idx = np.asarray(store.episode_starts)
    else:
        idx = slice(None)
    z = torch.as_tensor(np.asarray(latents.z[idx]), dtype=torch.float32)
    sigma = getattr(latents, "sigma", None)
    if sigma is not None:
        sigma = torch.as_tensor(np.asarray(sigma[idx]), dtype=torch.float32) / memory.latent_std
    with torch.no_grad():
        return memory.standardise(z), sigma


class DreamEnv(gym.Env):
    """One dream as a gymnasium env: observation ``[z, h]`` (``[z, h, c]`` with
    ``include_cell``) float32, the real env's action space, reward and termination from
    M (``terminated`` = M's done; ``truncated`` = the time limit).

    Args:
        dream: A ``Dream`` (its ``compact`` setting is ignored: one row always stays).
        include_cell: Put the LSTM cell state in the observation too.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, dream: Dream, include_cell: bool = False):
        self.dream = Dream(dream.memory, dream.starts, dream.tau, dream.done_mode,
                           dream.reward_mode, dream.max_steps, compact=False,
                           start_sigma=dream.start_sigma, done_threshold=dream.done_threshold,
                           precision=dream.precision, observer=dream.observer,
                           kernel=dream.kernel)
        self.include_cell = include_cell
        size = dream.latent_dim + dream.hidden_size * (2 if include_cell else 1)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.action_space = dream.action.space  # the real env's own space
        self._state: DreamState | None = None

    def _obs(self) -> np.ndarray:
        return self._state.controller_input(self.include_cell)[0].numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        generator = torch.Generator()
        generator.manual_seed(int(self.np_random.integers(2 ** 62)))
        self._state = self.dream.reset(1, generator)
        return self._obs(), {}

    def step(self, action):
        if self._state is None:
            raise gym.error.ResetNeeded("DreamEnv: call reset() before step()")
        a = torch.as_tensor(np.asarray(action)).reshape(1, *np.shape(action))
        self._state, _, reward, done = self.dream.step(self._state, a)
        truncated = bool(done[0]) and self._state.t >= self.dream.max_steps
        terminated = bool(done[0]) and not truncated
        return self._obs(), float(reward[0]), terminated, truncated, {}
