"""A trained controller as a data policy for ``collect``: V encodes each frame, M carries
the memory ``h``, C acts on ``[z, h]``, exactly as in the evaluation. With ``epsilon`` > 0
some stretches are random held actions instead (the collection policy's holds), so the
data covers C's states and the ways out of them.

This is the data of the paper's iterative training procedure (Ha & Schmidhuber 2018, sec.
5): episodes played by the dream-trained C put the states it actually reaches into M's
data, so a dream that was wrong there (a wall it thought safe) is corrected.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from jepa_wm.controller import ControllerFile
from jepa_wm.controller.real import observe
from jepa_wm.data.collect import random_action
from jepa_wm.envs.actions import ActionSpace

#: Separates this policy's random stream from the env's seed stream of the same episode.
_STREAM = 2


class ControllerPolicy:
    """C (with V and M in the loop) as a ``jepa_wm.data.collect.Policy``.

    Args:
        vision, memory: The V and M the controller was trained with.
        controller: Its ``ControllerFile``.
        seed: Store seed; episode ``e`` draws its noise from ``default_rng([seed, e, 2])``.
        epsilon: Chance, at each step where no random hold is running, of starting one.
        max_hold: Random holds last ``1..max_hold`` steps (uniform).

    A slot's actions depend only on its episode number and its own frames, so stores are
    byte-identical however the episodes are spread over workers.
    """

    def __init__(self, vision, memory, controller: ControllerFile, seed: int = 0,
                 epsilon: float = 0.0, max_hold: int = 10):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon {epsilon}: accepted 0..1")
        controller.check_fits(memory, "controller")
        self.vision, self.memory, self.controller = vision, memory, controller
        self.population = controller.population(1)
        self.seed, self.epsilon, self.max_hold = seed, epsilon, max_hold
        self.action: ActionSpace = memory.action
        digest = hashlib.sha256(controller.params.astype(np.float32).tobytes()).hexdigest()
        self.name = f"controller({digest[:16]}, epsilon={epsilon}, max_hold={max_hold})"

    def reset(self, num_envs: int) -> None:
        H = self.memory.net.hidden_size
        self.h, self.c = torch.zeros(num_envs, H), torch.zeros(num_envs, H)
        self.rngs = [np.random.default_rng(i) for i in range(num_envs)]
        self.left = np.zeros(num_envs, np.int64)
        self.held = [None] * num_envs

    def start_episode(self, slot: int, episode: int) -> None:
        self.rngs[slot] = np.random.default_rng([self.seed, episode, _STREAM])
        self.h[slot], self.c[slot], self.left[slot] = 0.0, 0.0, 0

    def _noise(self, shape: torch.Size) -> torch.Tensor:
        """Each slot's z noise from its own episode stream."""
        return torch.from_numpy(np.stack([rng.standard_normal(shape[1], dtype=np.float32)
                                          for rng in self.rngs]))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        z = observe(self.vision, self.memory, obs, self._noise)
        x = torch.cat([z, self.h] + ([self.c] if self.controller.include_cell else []), -1)
        env_action, _ = self.population(x, torch.zeros(len(x), dtype=torch.long))
        env_action = env_action.numpy().copy()
        for i, rng in enumerate(self.rngs):
            if self.left[i] == 0 and self.epsilon > 0 and rng.random() < self.epsilon:
                self.held[i] = random_action(self.action.space, rng)
                self.left[i] = rng.integers(1, self.max_hold + 1)
            if self.left[i] > 0:
                env_action[i] = self.held[i]
                self.left[i] -= 1
        vec = self.action.vector(torch.as_tensor(env_action))
        _, self.h, self.c = self.memory.net.step(z, vec, self.h, self.c)
        return env_action
