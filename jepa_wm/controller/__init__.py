"""C's training (CMA-ES in the dream or the real env) and evaluation, plus the controller
file ``best.npz`` they share: the flat parameter vector and the shape of C's input."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jepa_wm.envs.actions import ActionSpace
from jepa_wm.io import UserError, atomic_path, sha256_file
from jepa_wm.nets.controller import ControllerPopulation, num_params


@contextmanager
def torch_threads(n: int | None):
    """Run torch on ``n`` CPU threads inside the block (None: leave the count as it is);
    the previous count is restored after."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def single_thread():
    """One torch thread inside the block: for real play, whose env worker processes share
    the cores with it (a few rows of V, M and C per step: a second thread buys nothing)."""
    return torch_threads(1)


@dataclass
class ControllerFile:
    """A saved controller: ``params`` ``(num_params,)`` float32 and what it acts on."""

    params: np.ndarray
    latent_dim: int
    hidden_size: int
    include_cell: bool
    action: ActionSpace
    fitness: float = float("nan")

    def __post_init__(self):
        self.action = ActionSpace.of(self.action)

    @property
    def input_dim(self) -> int:
        return self.latent_dim + self.hidden_size * (2 if self.include_cell else 1)

    def population(self, copies: int = 1, kernel: str = "eager") -> ControllerPopulation:
        """This controller as a population of ``copies`` identical candidates (``kernel`` as
        ``ControllerPopulation``'s)."""
        params = torch.as_tensor(self.params, dtype=torch.float32).expand(copies, -1)
        return ControllerPopulation(params, self.input_dim, self.action, kernel=kernel)

    def save(self, path: str | Path) -> None:
        """Write ``best.npz`` atomically (no pickles: plain arrays and a JSON string)."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, params=self.params.astype(np.float32),
                     latent_dim=self.latent_dim, hidden_size=self.hidden_size,
                     include_cell=self.include_cell, fitness=self.fitness,
                     action=json.dumps(self.action.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> ControllerFile:
        """Read ``best.npz``; anything else is a one-line ``UserError`` naming the file."""
        try:
            with np.load(path, allow_pickle=False) as f:
                c = cls(f["params"], int(f["latent_dim"]), int(f["hidden_size"]),
                        bool(f["include_cell"]), json.loads(str(f["action"])),
                        float(f["fitness"]))
        except FileNotFoundError:
            raise UserError(f"{path}: controller file not found") from None
        except (KeyError, ValueError, OSError, UserError) as e:
            raise UserError(f"{path}: not a controller file written by train-controller "
                            f"({type(e).__name__}: {e})") from None
        if c.params.shape != (num_params(c.input_dim, c.action),):
            raise UserError(f"{path}: {c.params.shape[0]} parameters do not fit its input "
                            f"{c.input_dim} and action {c.action}")
        return c

    def check_fits(self, memory, path: str | Path) -> None:
        """The controller must match M's latent size, hidden size and action space."""
        if (self.latent_dim, self.hidden_size, self.action) != (
                memory.latent_dim, memory.net.hidden_size, memory.action):
            raise UserError(f"{path}: controller for latent {self.latent_dim}, hidden "
                            f"{self.hidden_size}, action {self.action}; M has latent "
                            f"{memory.latent_dim}, hidden {memory.net.hidden_size}, action "
                            f"{memory.action}")


def check_vision_matches(vision_path: str | Path, memory_path: str | Path,
                         memory_vision_sha: str | None) -> None:
    """M must have been trained on latents of this very V checkpoint (when M recorded it)."""
    if memory_vision_sha and sha256_file(vision_path) != memory_vision_sha:
        raise UserError(f"{vision_path}: not the V whose latents trained {memory_path} (sha256 "
                        f"differs); pass the vision checkpoint of the same run")


def load_memory_checked(memory_path: str | Path, vision_path: str | Path | None = None,
                        latents=None):
    """``load_memory`` plus, when given, the checks that M was trained on latents of the V
    at ``vision_path`` and of the same V as the latent set ``latents``."""
    from jepa_wm.memory import load_memory

    memory = load_memory(memory_path)
    sha = memory.extra.get("vision_sha256")
    if vision_path is not None:
        check_vision_matches(vision_path, memory_path, sha)
    if latents is not None and sha and latents.vision_sha256 != sha:
        raise UserError(f"{latents.path}: latent set made by another vision checkpoint than "
                        f"the one {memory_path} was trained on; pass the latents of the same "
                        "run")
    return memory
