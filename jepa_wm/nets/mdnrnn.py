"""The MDN-RNN memory M of World Models (Ha & Schmidhuber 2018, after Graves 2013): an LSTM
over ``[z_t, a_t]`` whose head gives a mixture of K diagonal Gaussians for ``z_{t+1}``, the
reward of the step and the logit that the step ended the episode.

Shapes: ``B`` batch, ``T`` time, ``D`` latent dim, ``A`` action-vector dim, ``K`` mixtures,
``H`` hidden size. Mixture tensors are ``(..., D, K)``; with ``shared_mixture`` the mixture
logits are ``(..., K)`` (one component choice for the whole vector).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MDNOutput(NamedTuple):
    """M's prediction for one step (any leading shape ``...``).

    logit_pi: mixture logits ``(..., D, K)``, or ``(..., K)`` when shared across dims.
    mu, log_sigma: ``(..., D, K)``.
    reward: predicted reward of the step ``(...)``.
    done_logit: Bernoulli logit that the step ended the episode ``(...)``.
    """

    logit_pi: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor
    reward: torch.Tensor
    done_logit: torch.Tensor


class MDNRNN(nn.Module):
    """LSTM + mixture density head + reward head + done head.

    Args:
        latent_dim: D, size of z.
        action_dim: A, size of the action vector (one-hot for Discrete spaces).
        hidden_size: H, LSTM units (the paper: 256 for CarRacing, 512 for Doom).
        num_mixtures: K Gaussians per latent dimension.
        shared_mixture: One set of mixture weights for the whole z (a K-component mixture of
            diagonal Gaussians over the vector) instead of the paper's weights per dimension.
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden_size: int = 256,
                 num_mixtures: int = 5, shared_mixture: bool = False):
        super().__init__()
        self.latent_dim, self.action_dim = latent_dim, action_dim
        self.hidden_size, self.num_mixtures = hidden_size, num_mixtures
        self.shared_mixture = shared_mixture
        D, K = latent_dim, num_mixtures
        self.n_logits = K if shared_mixture else D * K
        self.lstm = nn.LSTM(latent_dim + action_dim, hidden_size, batch_first=True)
        # one linear layer for every output: logits, mu, log_sigma, reward, done
        self.head = nn.Linear(hidden_size, self.n_logits + 2 * D * K + 2)
        with torch.no_grad():  # deaths are rare: start the done head at p ~ 0.7% (a prior,
            self.head.bias[-1] = -5.0  # as RetinaNet), not 50% that ends every dream at once

    def initial_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)``, each ``(batch, H)``."""
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def split_head(self, y: torch.Tensor) -> MDNOutput:
        """Head output ``(..., n_out)`` -> ``MDNOutput``."""
        D, K, L = self.latent_dim, self.num_mixtures, self.n_logits
        lead = y.shape[:-1]
        logit_pi = y[..., :L].reshape(*lead, K) if self.shared_mixture else \
            y[..., :L].reshape(*lead, D, K)
        mu = y[..., L:L + D * K].reshape(*lead, D, K)
        log_sigma = y[..., L + D * K:L + 2 * D * K].reshape(*lead, D, K)
        # clamp keeps exp() finite for an untrained or diverging head
        return MDNOutput(logit_pi, mu, log_sigma.clamp(-7.0, 5.0), y[..., -2], y[..., -1])

    def forward(self, z: torch.Tensor, a: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None,
                starts: torch.Tensor | None = None
                ) -> tuple[MDNOutput, tuple[torch.Tensor, torch.Tensor]]:
        """Teacher-forced pass over a sequence.

        ``z`` ``(B, T, D)``, ``a`` ``(B, T, A)``, ``state`` ``(h, c)`` each ``(B, H)`` or None
        -> the prediction for ``z_{t+1}``, ``r_t``, ``done_t`` at every t (leading ``(B, T)``)
        and the final ``(h, c)``. ``starts`` bool ``(B, T)``: row b begins an episode at
        step t, so its state is zeroed before that step (episodes packed back to back). The
        LSTM then runs segment by segment between the steps where any row starts: on CPU a
        batch of 16 x 500 steps cut into ~25 segments costs about what one call does.
        """
        if state is None:
            B = z.shape[0]
            state = (z.new_zeros(B, self.hidden_size), z.new_zeros(B, self.hidden_size))
        h, c = state[0].unsqueeze(0).contiguous(), state[1].unsqueeze(0).contiguous()
        x = torch.cat([z, a], dim=-1)
        cuts = [] if starts is None else torch.nonzero(starts[:, 1:].any(0)).flatten() + 1
        bounds = [0, *map(int, cuts), x.shape[1]]
        outs = []
        for s, e in itertools.pairwise(bounds):
            if s > 0:
                keep = (~starts[:, s]).to(h.dtype).view(1, -1, 1)
                h, c = h * keep, c * keep
            out, (h, c) = self.lstm(x[:, s:e], (h, c))
            outs.append(out)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self.split_head(self.head(out)), (h[0], c[0])

    def step(self, z: torch.Tensor, a: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
             matmul_dtype: torch.dtype = torch.float32
             ) -> tuple[MDNOutput, torch.Tensor, torch.Tensor]:
        """One step for a batch, written at LSTM-cell level (one fused matmul) for the dream.

        ``z`` ``(N, D)``, ``a`` ``(N, A)``, ``h``/``c`` ``(N, H)`` -> prediction (leading
        ``(N,)``), new ``h``, new ``c``. Same numbers as ``forward`` on a length-1 sequence
        (to float rounding). ``matmul_dtype`` ``torch.bfloat16`` runs the two matmuls (cell
        and head) in bf16 on cached bf16 weights; the state, the gates' nonlinearities and
        the outputs stay fp32.
        """
        if torch.is_grad_enabled():  # training through step(): a fresh graph, no caches
            x = torch.cat([z, a, h], dim=-1)
            p = self.lstm
            gates = torch.addmm(p.bias_ih_l0 + p.bias_hh_l0, x,
                                torch.cat([p.weight_ih_l0, p.weight_hh_l0], dim=1).t())
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return self.split_head(self.head(h)), h, c
        h, c = self.cell(z, a, h, c, matmul_dtype)
        hw, hb = self._head_weights(matmul_dtype)
        y = self.head(h) if hw is None else torch.addmm(hb, h.to(matmul_dtype), hw).float()
        return self.split_head(y), h, c

    def cell(self, z: torch.Tensor, a: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
             matmul_dtype: torch.dtype = torch.float32, fused: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM cell of ``step`` alone, no head (no gradients): new ``h``, ``c``. What a
        dream's observer M needs (it only keeps C's memory). ``fused``: the nonlinearities
        in the C++ kernel (``jepa_wm.nets.fused``)."""
        return self._cell(z, a, h, c, matmul_dtype, fused)[:2]

    def _cell(self, z, a, h, c, matmul_dtype: torch.dtype, fused: bool):
        """``cell``, plus the fused kernel's copy of the new h in ``matmul_dtype`` (what the
        head's matmul takes; empty under fp32, and ``None`` for the eager path)."""
        w, b = self._cell_weights(matmul_dtype)
        gates = torch.addmm(b, torch.cat([z, a, h], dim=-1).to(matmul_dtype), w)
        if fused:
            from jepa_wm.nets.fused import ops

            return ops().lstm_cell(gates, c.contiguous())
        # one in-place sigmoid over all four gates: the g block's weights are doubled in
        # the cache, and tanh(x) = 2 sigmoid(2x) - 1 (the four separate nonlinearities on
        # strided views took 2-3x as long at 1,024 x 512)
        i, f, g, o = torch.sigmoid_(gates.float()).chunk(4, dim=-1)
        c = torch.addcmul(f * c, i, g.mul(2.0).sub_(1.0))
        return o * torch.tanh(c), c, None

    def dream_step(self, z: torch.Tensor, a: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                   matmul_dtype: torch.dtype, tau: float, uniform: torch.Tensor,
                   normal: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                              torch.Tensor]:
        """``step`` and ``sample_gmm`` in one, the elementwise work in the fused C++
        kernels (``jepa_wm.nets.fused``; no gradients): the same two matmuls, then the
        cell's nonlinearities and the mixture draw each as one pass over the rows. The
        head's cached weights put its mixture outputs component-major (``(K, D)``, not
        ``(D, K)``), so the draw runs along D in vector registers.

        Returns the drawn ``z`` ``(N, D)``, ``reward`` ``(N,)``, ``done_logit`` ``(N,)``,
        new ``h`` and ``c``: the numbers of ``step`` + ``sample_gmm`` to float rounding.
        """
        from jepa_wm.nets.fused import ops

        h, c, h_low = self._cell(z, a, h, c, matmul_dtype, fused=True)
        hw, hb = self._head_weights(matmul_dtype, component_major=True)
        y = torch.addmm(hb, h if h_low.numel() == 0 else h_low, hw)
        z = ops().sample_mixture(y, self.latent_dim, self.num_mixtures, self.shared_mixture,
                                 check_tau(tau), uniform.contiguous(), normal.contiguous())
        return z, y[:, -2].float(), y[:, -1].float(), h, c

    def _cell_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """For ``step`` without gradients: ``[W_ih, W_hh]^T`` ``(D + A + H, 4H)`` and the
        summed bias, the g gate's block doubled, in ``dtype`` (cached)."""
        p = self.lstm

        def make():
            H = self.hidden_size
            w = torch.cat([p.weight_ih_l0, p.weight_hh_l0], dim=1).t().contiguous()
            b = p.bias_ih_l0 + p.bias_hh_l0
            w[:, 2 * H:3 * H] *= 2.0
            b[2 * H:3 * H] *= 2.0
            return w.to(dtype), b.to(dtype)
        return self._cached(("cell", dtype), make, p.weight_ih_l0, p.weight_hh_l0,
                            p.bias_ih_l0, p.bias_hh_l0)

    def _head_weights(self, dtype: torch.dtype, component_major: bool = False):
        """The head's weight ``(H, out)`` and bias in ``dtype`` (cached), or ``(None,
        None)`` for fp32 in the natural order (``self.head`` is used as it is then).
        ``component_major`` orders the mixture outputs ``(K, D)`` (``dream_step``)."""
        if dtype == torch.float32 and not component_major:
            return None, None
        weight, bias = self.head.weight, self.head.bias

        def make():
            order = self._component_major() if component_major else slice(None)
            return weight[order].t().contiguous().to(dtype), bias[order].to(dtype)
        return self._cached(("head", dtype, component_major), make, weight, bias)

    def _cached(self, name: tuple, make, *params: torch.Tensor):
        """``make()``, kept under ``name`` until one of ``params`` changes (its storage, or
        its version counter, which moves on every in-place update)."""
        key = tuple((q.data_ptr(), q._version) for q in params)
        cache = self.__dict__.setdefault("_step_cache", {})
        if cache.get(name, (None,))[0] != key:
            with torch.no_grad():
                cache[name] = (key, make())
        return cache[name][1]

    def _component_major(self) -> torch.Tensor:
        """The head's output columns reordered: each ``(D, K)`` block (mixture logits unless
        shared, mu, log sigma) as ``(K, D)``; the rest in place."""
        D, K, L = self.latent_dim, self.num_mixtures, self.n_logits
        block = torch.arange(D * K).view(D, K).t().reshape(-1)
        parts = [torch.arange(K) if self.shared_mixture else block,
                 L + block, L + D * K + block, torch.arange(L + 2 * D * K, L + 2 * D * K + 2)]
        return torch.cat(parts)


def gmm_nll(z: torch.Tensor, logit_pi: torch.Tensor, mu: torch.Tensor,
            log_sigma: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``z`` ``(..., D)`` under the mixture, summed over D.

    ``logit_pi`` is ``(..., D, K)`` (weights per dimension: a product of D independent 1-D
    mixtures, the paper's choice) or ``(..., K)`` (shared: one K-component mixture of
    diagonal Gaussians). ``mu``, ``log_sigma`` ``(..., D, K)``. Returns ``(...)``.
    """
    x = z.unsqueeze(-1)
    log_normal = -0.5 * ((x - mu) * torch.exp(-log_sigma)) ** 2 - log_sigma - LOG_SQRT_2PI
    log_pi = F.log_softmax(logit_pi, dim=-1)
    if logit_pi.dim() == mu.dim():  # per-dimension weights
        return -torch.logsumexp(log_pi + log_normal, dim=-1).sum(-1)
    return -torch.logsumexp(log_pi + log_normal.sum(-2), dim=-1)


def check_tau(tau: float) -> float:
    """The temperature must be positive (0 would divide the logits by zero)."""
    if not tau > 0:
        from jepa_wm.io import UserError

        raise UserError(f"tau: {tau} is not a valid temperature; accepted: a number > 0")
    return float(tau)


def sample_gmm(pred: MDNOutput, tau: float = 1.0, uniform: torch.Tensor | None = None,
               normal: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``z`` ``(N, D)`` from a prediction with leading shape ``(N,)`` at temperature
    ``tau`` (logits / tau, sigma * sqrt(tau), as in the paper).

    ``uniform`` (``(N, D)``, or ``(N, 1)`` when shared) picks the component by inverse CDF
    and ``normal`` ``(N, D)`` is the Gaussian noise; both are drawn from ``generator`` when
    not given (passing them lets the dream draw noise for every dream, live or not).
    """
    tau = check_tau(tau)
    N, D, K = pred.mu.shape
    shared = pred.logit_pi.dim() == 2
    if uniform is None:
        uniform = torch.rand(N, 1 if shared else D, generator=generator)
    if normal is None:
        normal = torch.randn(N, D, generator=generator)
    # softmax written out: torch's softmax over a last dim of K ~ 5 is ~5x slower than
    # these three ops, and it was 15% of a dream step (benchmarks/results/dream.md)
    logits = pred.logit_pi / tau
    probs = (logits - logits.amax(-1, keepdim=True)).exp_()
    probs = probs / probs.sum(-1, keepdim=True)
    if shared:
        probs = probs.unsqueeze(1)  # (N, 1, K): one choice for every dim
    cdf = probs.cumsum(-1)
    k = (cdf < uniform.unsqueeze(-1)).sum(-1).clamp_(max=K - 1)  # (N, D) or (N, 1)
    k = k.expand(N, D).unsqueeze(-1)
    mu = pred.mu.gather(-1, k).squeeze(-1)
    sigma = pred.log_sigma.gather(-1, k).squeeze(-1).exp()
    return mu + sigma * math.sqrt(tau) * normal
