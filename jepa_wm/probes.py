"""Linear probes: what does a V's latent z know about the game?

The rollout store records the game state of every frame (``jepa_wm.envs.vizdoom``: the
player's position and health, the number of imp fireballs in view, the screen x of and
distance to the nearest one). A probe is a linear map of z (the VAE's mean) fitted on the
training episodes and scored on held-out ones that V never trained on:

- a continuous value: ridge regression, scored by R² on the held-out frames (1 is
  perfect, 0 is no better than the held-out mean, negative is worse); the fireball's
  screen x and distance only on frames with a fireball in view;
- ``fireball_in_view`` (any fireball on screen): logistic regression, scored by accuracy,
  next to the accuracy of always guessing the training episodes' majority class
  (``fireball_in_view_base``);
- ``fireball_touching`` (the nearest fireball closer than ``jepa_wm.envs.vizdoom.TOUCHING``:
  hitting the player now, 1-2% of frames and most of the deaths): logistic regression,
  scored by its average precision on the held-out frames (1 is a perfect ranking; chance
  is the share of such frames, ``fireball_touching_base``), since accuracy means nothing
  for a class this rare and the ROC area is near 1 for every V (the easy negatives, frames
  with no fireball near, swamp it);
- ``death_next`` (the step taken from this frame ends the episode in a death: the store's
  ``terminated`` flag, one frame per lost episode; in take-cover every termination is a
  death, and a truncation at the step limit is not one): logistic regression on z alone, scored
  by average precision like ``fireball_touching`` (chance ``death_next_base``). It asks
  for what M's death head needs most, that a hit is happening now, from the frame only.

z is standardised with the training frames' statistics. The ridge strength is chosen
among ``RIDGE`` on the last fifth of the training episodes (never on the held-out ones)
and the probe refitted on all of them. Fireballs decide survival in take-cover and are
a few pixels wide: a V that drops small moving objects shows it here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from jepa_wm.envs.vizdoom import TOUCHING

#: Ridge strengths tried (on standardised z, per training frame).
RIDGE = (1e-4, 1e-2, 1.0)
#: Values whose probe is only fitted and scored where a fireball is in view.
ONLY_WITH_FIREBALL = ("fireball_screen_x", "fireball_dist")
#: A target that varies less than this (std over the training frames) is not probed.
MIN_STD = 1e-6


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Weights ``(D + 1,)`` (bias last) minimising ``|[x 1] w - y|² / n + lam |w[:-1]|²``."""
    n, d = x.shape
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    reg = np.eye(d + 1) * lam * n
    reg[d, d] = 0.0
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


def _predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination of ``pred`` for ``y``."""
    sst = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / sst if sst > 0 else math.nan


def fit_ridge(x: np.ndarray, y: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge weights for ``x -> y`` and the strength chosen on the training rows where
    ``inner`` is True (fit on the others, scored there); refitted on every row."""
    fit, check = ~inner, inner
    best = RIDGE[0]
    if fit.sum() > x.shape[1] and check.sum() > 1:
        scores = [r2(y[check], _predict(x[check], _ridge(x[fit], y[fit], lam)))
                  for lam in RIDGE]
        best = RIDGE[int(np.nanargmax(scores))] if not all(map(math.isnan, scores)) else best
    return _ridge(x, y, best), best


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-4,
                 iters: int = 100) -> tuple[np.ndarray, float]:
    """Logistic regression ``x -> y`` (bool) by L-BFGS in float64; weights ``(D,)``, bias."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) \
            + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision of ``score`` for the bool labels ``y``: the precision at each
    positive, ranked by score, averaged over the positives (chance: the positive rate);
    NaN without a positive."""
    pos = int(y.sum())
    if pos == 0:
        return math.nan
    hits = y[np.argsort(-score, kind="stable")].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / pos)


def _classify(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict:
    """A logistic probe of the bool ``y`` fitted on the ``train`` rows; its held-out
    scores, or why it was not fitted."""
    if train.sum() <= x.shape[1] or test.sum() < 2 or not 0 < y[train].mean() < 1:
        return {"skipped": "too few frames, or one class only"}
    w, b = fit_logistic(x[train], y[train].astype(np.float64))
    return {"logit": x[test] @ w + b, "frames_train": int(train.sum()),
            "frames_test": int(test.sum())}


def _rare(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict:
    """A logistic probe of a rare bool class, scored by held-out average precision."""
    fit = _classify(x, y, train, test)
    if "logit" in fit:
        fit.update(score=average_precision(y[test], fit.pop("logit")), base=float(y[test].mean()))
    return {"metric": "average_precision", **fit}


def probe(z: np.ndarray, state: np.ndarray, names: Sequence[str], train: np.ndarray,
          inner: np.ndarray, terminated: np.ndarray | None = None) -> dict[str, dict]:
    """Fit and score every probe.

    Args:
        z: ``(N, D)`` latents of N frames.
        state: ``(N, S)`` their game state, columns ``names`` (NaN where unknown).
        train: ``(N,)`` bool, the frames of training episodes (the rest are held out).
        inner: ``(N,)`` bool, training frames used to choose the ridge strength (the
            last training episodes).
        terminated: ``(N,)`` bool, the frames whose step ended the episode in a death
            (the store's flag), for ``death_next``; None leaves that probe out.

    Returns: target -> ``{"metric": "r2" | "accuracy", "score", "frames_train",
    "frames_test", ...}`` (``"skipped"`` with the reason for a target that cannot be
    probed here).
    """
    z = np.asarray(z, np.float64)
    mean, std = z[train].mean(0), z[train].std(0)
    x = (z - mean) / np.where(std > 0, std, 1.0)
    names = list(names)
    out: dict[str, dict] = {}
    in_view = state[:, names.index("fireballs")] > 0 if "fireballs" in names else None
    for j, name in enumerate(names):
        y = state[:, j].astype(np.float64)
        rows = np.isfinite(y)
        if name in ONLY_WITH_FIREBALL and in_view is not None:
            rows &= in_view
        tr, te = rows & train, rows & ~train
        if tr.sum() <= x.shape[1] or te.sum() < 2:
            out[name] = {"metric": "r2", "skipped": "too few frames with this value"}
            continue
        if y[tr].std() < MIN_STD:
            out[name] = {"metric": "r2", "skipped": "constant over the training frames"}
            continue
        w, lam = fit_ridge(x[tr], y[tr], inner[tr])
        out[name] = {"metric": "r2", "score": r2(y[te], _predict(x[te], w)),
                     "train_score": r2(y[tr], _predict(x[tr], w)), "ridge": lam,
                     "frames_train": int(tr.sum()), "frames_test": int(te.sum())}
    if in_view is not None:
        rows = np.isfinite(state[:, names.index("fireballs")])
        tr, te = rows & train, rows & ~train
        fit = _classify(x, in_view, tr, te)
        if "logit" in fit:
            majority = float(in_view[tr].mean() >= 0.5)
            fit.update(score=float(np.mean((fit.pop("logit") > 0) == in_view[te])),
                       base=float(np.mean(in_view[te] == majority)))
        out["fireball_in_view"] = {"metric": "accuracy", **fit}
        if "fireball_dist" in names:
            dist = state[:, names.index("fireball_dist")]
            touching = in_view & (np.nan_to_num(dist, nan=np.inf) < TOUCHING)
            out["fireball_touching"] = _rare(x, touching, tr, te)
    if terminated is not None:
        out["death_next"] = _rare(x, np.asarray(terminated, bool), train, ~train)
    return out


def flat_scores(probes: dict[str, dict]) -> dict[str, float]:
    """``{"probe_<target>": score}`` (and ``probe_<target>_base`` for a classifier) for
    the report and W&B; NaN for a skipped target."""
    out = {}
    for name, p in probes.items():
        out[f"probe_{name}"] = float(p.get("score", math.nan))
        if "base" in p:
            out[f"probe_{name}_base"] = float(p["base"])
    return out
