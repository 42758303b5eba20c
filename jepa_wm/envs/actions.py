"""The one description of an env's actions, shared by the env, the rollout store, V, M, C,
the dream and ``DreamEnv``.

``ActionSpace`` wraps the env's own gymnasium space (Discrete, Box, MultiBinary or
MultiDiscrete) and gives everything the pipeline asks of it:

- ``to_dict()``: its JSON form, the one the store's ``meta.json`` and every checkpoint (M's
  ``final.ckpt``, C's ``best.npz``) carry; ``ActionSpace.of`` reads it back (and the older
  ``{"type": "discrete", "n": N}`` / ``{"type": "box", "low": [...], "high": [...]}`` form of
  checkpoints written before there was one description);
- ``dim`` and ``vector(a)``: the float vector V's predictor and M consume (one-hot for
  Discrete), batched over leading dims, numpy or torch;
- ``env_action(v)``: a vector back to an env action (argmax, clip, > 0.5);
- ``controller_dim`` and ``controller_action(y)``: how C's raw outputs become an env action
  and M's vector (Discrete: argmax of N logits; Box: tanh scaled to ``[low, high]``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from jepa_wm.io import UserError

SUPPORTED = "Discrete, Box, MultiBinary or MultiDiscrete"


class ActionSpace:
    """An env's action space (see the module docstring). Equal when their ``to_dict()``
    are equal."""

    def __init__(self, space: gym.Space):
        if not isinstance(space, (gym.spaces.Discrete, gym.spaces.Box, gym.spaces.MultiBinary,
                                  gym.spaces.MultiDiscrete)):
            raise UserError(f"action space {space}: not supported; use {SUPPORTED}")
        self.space = space

    @classmethod
    def of(cls, x: Any) -> ActionSpace:
        """From an ``ActionSpace``, a gymnasium space, or a dict (``to_dict()``'s form or a
        checkpoint's older one)."""
        if isinstance(x, ActionSpace):
            return x
        if isinstance(x, gym.Space):
            return cls(x)
        if isinstance(x, dict):
            from jepa_wm.data.store import space_from_dict

            kind = x.get("type")
            if kind == "discrete":  # checkpoints written before one description existed
                return cls(gym.spaces.Discrete(int(x["n"])))
            if kind == "box":
                low, high = np.asarray(x["low"], np.float32), np.asarray(x["high"], np.float32)
                return cls(gym.spaces.Box(low, high, low.shape, np.float32))
            return cls(space_from_dict(x))
        raise UserError(f"action space {x!r}: not a gymnasium space or its description")

    def to_dict(self) -> dict:
        from jepa_wm.data.store import space_to_dict

        return space_to_dict(self.space)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (ActionSpace, gym.Space, dict)):
            return self.to_dict() == ActionSpace.of(other).to_dict()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        return f"ActionSpace({self.space})"

    @property
    def discrete(self) -> bool:
        return isinstance(self.space, gym.spaces.Discrete)

    # ------------------------------------------------------------ vectors for the nets

    @property
    def dim(self) -> int:
        """Length of the float vector ``vector`` gives."""
        s = self.space
        if isinstance(s, gym.spaces.Discrete):
            return int(s.n)
        if isinstance(s, gym.spaces.MultiDiscrete):
            return int(np.sum(s.nvec))
        return int(np.prod(s.shape))

    def vector(self, a):
        """Env actions -> float32 vectors, batched over leading dims: Discrete ``(...)``
        int -> one-hot ``(..., n)`` (vectors already of that form pass through); Box
        ``(..., *shape)`` -> ``(..., d)``; MultiBinary as floats; MultiDiscrete as
        concatenated one-hots. numpy in, numpy out; torch in, torch out (same device)."""
        is_torch = type(a).__module__.startswith("torch")
        if not is_torch:
            a = np.asarray(a)
        s = self.space
        if isinstance(s, gym.spaces.Discrete):
            floating = a.is_floating_point() if is_torch else np.issubdtype(a.dtype, np.floating)
            if floating and a.ndim and a.shape[-1] == int(s.n):  # already one-hot vectors
                return a.float() if is_torch else a.astype(np.float32)
            idx = a - int(s.start)
            if is_torch:
                import torch

                return torch.nn.functional.one_hot(idx.long().clamp(min=0), int(s.n)).float()
            return np.eye(int(s.n), dtype=np.float32)[idx.astype(np.int64)]
        if isinstance(s, gym.spaces.MultiDiscrete):
            parts = [ActionSpace(gym.spaces.Discrete(int(n))).vector(a[..., i])
                     for i, n in enumerate(s.nvec.ravel())]
            if is_torch:
                import torch

                return torch.cat(parts, dim=-1)
            return np.concatenate(parts, axis=-1)
        lead = tuple(a.shape[:a.ndim - len(s.shape)])
        flat = a.reshape(*lead, self.dim)
        return flat.float() if is_torch else flat.astype(np.float32)

    def env_action(self, v: np.ndarray) -> np.ndarray:
        """Float vectors ``(..., dim)`` -> env actions (argmax for Discrete, clipped for
        Box, > 0.5 for MultiBinary)."""
        v = np.asarray(v, dtype=np.float32)
        s = self.space
        if isinstance(s, gym.spaces.Discrete):
            return v.argmax(-1).astype(np.int64) + int(s.start)
        if isinstance(s, gym.spaces.Box):
            a = v.reshape(*v.shape[:-1], *s.shape)
            return np.clip(a, s.low, s.high).astype(s.dtype)
        if isinstance(s, gym.spaces.MultiBinary):
            return (v > 0.5).astype(np.int8).reshape(*v.shape[:-1], *s.shape)
        out, i = [], 0
        for n in s.nvec.ravel():
            out.append(v[..., i:i + int(n)].argmax(-1))
            i += int(n)
        return np.stack(out, -1).astype(np.int64)

    # ------------------------------------------------------------ C's outputs

    def check_controller(self) -> None:
        """A one-line ``UserError`` unless C (and the dream's data policy) can act in this
        space: Discrete or a 1-D Box."""
        if not (self.discrete or (isinstance(self.space, gym.spaces.Box)
                                  and len(self.space.shape) == 1)):
            raise UserError(f"action space {self.space}: the linear controller acts on "
                            "Discrete or 1-D Box spaces only")

    @property
    def controller_dim(self) -> int:
        """C's raw output size: N logits (Discrete) or d values (Box)."""
        self.check_controller()
        return self.dim

    def controller_action(self, y):
        """C's raw outputs ``y`` ``(N, controller_dim)`` (torch) -> (env action, M's vector).

        Discrete: env action int64 ``(N,)`` (argmax, from ``start``), vector one-hot.
        Box: env action = vector = ``low + (tanh(y) + 1) / 2 * (high - low)``.
        """
        import torch

        self.check_controller()
        if self.discrete:
            idx = y.argmax(-1)
            vec = torch.nn.functional.one_hot(idx, y.shape[-1]).to(y.dtype)
            return idx + int(self.space.start), vec
        low = torch.as_tensor(self.space.low, dtype=y.dtype)
        high = torch.as_tensor(self.space.high, dtype=y.dtype)
        vec = low + (torch.tanh(y) + 1) * 0.5 * (high - low)
        return vec, vec
