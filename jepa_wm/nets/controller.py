"""The linear controller C of World Models: ``a = W [z, h] (+ W_c c) + b``, one flat
parameter vector, so CMA-ES can search it directly. A population of P vectors acts on P×R
dreams at once (one batched matmul per step).

The action space is the env's ``jepa_wm.envs.actions.ActionSpace`` (or its ``to_dict()``
form, as checkpoints and ``best.npz`` carry it): Discrete, C emits N logits and the action
is their argmax (one-hot for M); a 1-D Box, C emits d values, squashed by tanh and scaled
to ``[low, high]`` (``ActionSpace.controller_action``).
"""

from __future__ import annotations

import torch
from torch import nn

from jepa_wm.envs.actions import ActionSpace


def controller_input_dim(latent_dim: int, hidden_size: int, include_cell: bool) -> int:
    """Size of C's input ``[z, h]`` or ``[z, h, c]``."""
    return latent_dim + hidden_size * (2 if include_cell else 1)


def num_params(input_dim: int, action) -> int:
    """Length of the flat parameter vector: ``out * input_dim`` weights + ``out`` biases."""
    out = ActionSpace.of(action).controller_dim
    return out * input_dim + out


class LinearController(nn.Module):
    """One controller, built from a flat parameter vector.

    Args:
        input_dim: Size of ``[z, h]`` (``[z, h, c]`` with the cell state).
        action: Action space description (see the module docstring).
        params: Flat vector ``(num_params,)``; zeros when None.
    """

    def __init__(self, input_dim: int, action, params: torch.Tensor | None = None):
        super().__init__()
        self.input_dim, self.action = input_dim, ActionSpace.of(action)
        out = self.action.controller_dim
        n = num_params(input_dim, action)
        params = torch.zeros(n) if params is None else torch.as_tensor(params,
                                                                       dtype=torch.float32)
        if params.shape != (n,):
            raise ValueError(f"controller params: shape {tuple(params.shape)}, expected ({n},)")
        self.weight = nn.Parameter(params[:out * input_dim].reshape(out, input_dim).clone())
        self.bias = nn.Parameter(params[out * input_dim:].clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(N, input_dim)`` -> (env action, action vector), see
        ``ActionSpace.controller_action``."""
        return self.action.controller_action(nn.functional.linear(x, self.weight, self.bias))


class ControllerPopulation:
    """P controllers acting at once; row i of the input belongs to controller ``owner[i]``.

    Args:
        params: ``(P, num_params)`` flat vectors (one CMA-ES population).
        input_dim: Size of C's input.
        action: The action space (``ActionSpace`` or its dict).
        kernel: ``eager`` (each row's weights gathered, then a batched matmul) or ``fused``
            (one C++ pass over the rows, each reading its candidate's weights in place:
            ``jepa_wm.nets.fused``); the same actions to float rounding.
    """

    def __init__(self, params: torch.Tensor, input_dim: int, action, kernel: str = "eager"):
        params = torch.as_tensor(params, dtype=torch.float32)
        P = params.shape[0]
        action = ActionSpace.of(action)
        out = action.controller_dim
        if params.shape[1] != num_params(input_dim, action):
            raise ValueError(f"population params: {params.shape[1]} per candidate, expected "
                             f"{num_params(input_dim, action)}")
        self.weight = params[:, :out * input_dim].reshape(P, out, input_dim)
        self.bias = params[:, out * input_dim:]
        self.action = action
        self.fused = None
        if kernel == "fused":
            from jepa_wm.nets.fused import ops

            self.fused = ops().population_linear
            self.weight, self.bias = self.weight.contiguous(), self.bias.contiguous()
        elif kernel != "eager":
            raise ValueError(f"population kernel: {kernel!r}; accepted: eager, fused")

    def __call__(self, x: torch.Tensor, owner: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(N, input_dim)``, ``owner`` int64 ``(N,)`` in ``[0, P)`` -> (env action,
        action vector) for the N rows, each computed with its owner's parameters."""
        if self.fused is not None:
            y = self.fused(x.contiguous(), owner.contiguous(), self.weight, self.bias)
        else:
            y = torch.einsum("noi,ni->no", self.weight[owner], x) + self.bias[owner]
        return self.action.controller_action(y)
