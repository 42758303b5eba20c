"""M, the memory of World Models: ``MDNRNNModule`` trains the MDN-RNN the way the dream
uses it (whole episodes from a zero state, cut into chunks with the LSTM state carried;
latents standardised by the latent set's ``mean``/``std``; a VAE's z resampled as
``mu + sigma * eps`` every batch), ``load_memory`` rebuilds it from its checkpoint alone,
and ``train_memory`` is the ``train-memory`` stage (with a held-out validation split).

The latent set is ``encode``'s output folder: ``z.npy`` ``(N_frames, D)`` aligned with the
rollout store's frame index, and ``meta.json`` with ``mean``, ``std``, ``vision_sha256`` and
the store's path (which ``--data`` can override).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from jepa_wm.data.latents import latents_store_path
from jepa_wm.envs.actions import ActionSpace
from jepa_wm.io import UserError, claim, load_weights, save_checkpoint, write_json
from jepa_wm.nets.mdnrnn import MDNRNN, gmm_nll
from jepa_wm.parts import build_part, part_class
from jepa_wm.steps import (
    VALIDATION_LOG,
    AtomicCheckpointIO,
    StepSeed,
    ValidationLog,
    checkpoint_step,
    quiet_false_warnings,
    read_checkpoint,
    total_steps,
)

CHECKPOINT_KIND = "jepa_wm.memory"


# ----------------------------------------------------------------------------- latents


def load_latents(path: str | Path):
    """Open ``encode``'s output folder (``jepa_wm.data.latents.LatentSet``, memory-mapped)."""
    from jepa_wm.data.latents import LatentSet

    return LatentSet(path)


# ----------------------------------------------------------------------------- module


class MDNRNNModule(pl.LightningModule):
    """M: the MDN-RNN, teacher-forced on whole episodes in chunks of ``seq_len`` steps with
    the LSTM state carried from chunk to chunk (``jepa_wm.data.datasets.EpisodeChunks``),
    so h is trained over the whole span a dream runs, from the zero state it starts in.

    Losses (logged per part): ``memory/gmm_nll`` (mixture NLL of ``z_{t+1}`` per latent
    dimension), ``memory/reward_loss`` (MSE of ``r_t``), ``memory/done_loss`` (BCE of
    ``terminated_t``, with ``pos_weight``); ``train/loss`` is ``gmm_nll + reward_weight *
    reward_loss + done_weight * done_loss``; the same under ``val/`` on held-out episodes.

    The death head's output is the hazard the dream uses: ``hazard`` undoes any class weight
    (a weight w adds log w to the optimal logit), so no setting inflates the dream's deaths.

    Args:
        latent_dim: D; filled in by ``train-memory`` from the latent set.
        action: The action space (``ActionSpace.to_dict()``, e.g. ``{"type": "Discrete",
            "n": 3, "start": 0}``); filled in by ``train-memory`` from the rollout store.
        hidden_size: LSTM units (256; the paper's Doom M used 512).
        num_mixtures: K Gaussians per latent dimension (5 as the paper).
        shared_mixture: One set of mixture weights for the whole z instead of per dim.
        seq_len: Steps per training chunk: the gradient horizon of truncated BPTT (the
            state is carried over the whole episode whatever its value).
        lr: Adam learning rate.
        done_pos_weight: Weight of the positive (death) class in the done loss; 1 (the
            default) trains a calibrated head; any other weight is undone by ``hazard``.
        reward_weight: Weight of the reward loss in ``train/loss``.
        done_weight: Weight of the done loss in ``train/loss``.
        grad_clip: Gradient-norm clip (0 = none).
        untrained: Keep M as initialised (never trained): the control for M.
        z_noise: Std of Gaussian noise added to M's *input* latents while training
            (standardised units; never to the targets, never in validation): M learns to
            predict from inputs as imperfect as its own samples in a dream (GameNGen's
            noise augmentation). Meant for a V without a posterior (a JEPA), whose z
            would otherwise reach M noise-free. 0 = off.
    """

    def __init__(self, latent_dim: int | None = None, action: dict | None = None,
                 hidden_size: int = 256, num_mixtures: int = 5, shared_mixture: bool = False,
                 seq_len: int = 500, lr: float = 1e-3, done_pos_weight: float = 1.0,
                 reward_weight: float = 1.0, done_weight: float = 1.0, grad_clip: float = 1.0,
                 untrained: bool = False, z_noise: float = 0.0):
        super().__init__()
        if latent_dim is None or action is None:
            raise UserError("memory_model: latent_dim and action are filled in by "
                            "train-memory; build M through train_memory or load_memory")
        for name, v in (("hidden_size", hidden_size), ("num_mixtures", num_mixtures),
                        ("seq_len", seq_len)):
            if v < 1:
                raise UserError(f"memory_model.{name}: {v}; accepted: an integer >= 1")
        if not z_noise >= 0:
            raise UserError(f"memory_model.z_noise: {z_noise}; accepted: a number >= 0")
        if not done_pos_weight > 0:
            raise UserError(f"memory_model.done_pos_weight: {done_pos_weight}; accepted: a "
                            "number > 0 (1 = unweighted)")
        self.save_hyperparameters()
        self.action = ActionSpace.of(action)
        self.hparams["action"] = self.action.to_dict()  # plain values in every checkpoint
        self.net = MDNRNN(latent_dim, self.action.dim, hidden_size, num_mixtures,
                          shared_mixture)
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self._carry: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        #: what the checkpoint carried besides the model (``load_memory`` fills it)
        self.extra: dict[str, Any] = {}

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw V latents ``(..., D)`` -> the standardised space M works in."""
        return (z - self.latent_mean) / self.latent_std

    def hazard(self, done_logit: torch.Tensor) -> torch.Tensor:
        """p(the step ends the episode) ``(...)`` from the done head's logits, with the class
        weight undone: ``sigmoid(logit - log(done_pos_weight))``."""
        return torch.sigmoid(done_logit - math.log(self.hparams.done_pos_weight))

    def losses(self, batch: dict, state: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:
        """A batch of sequences (``z`` ``(B, T+1, D)`` raw latents, ``a``, ``r``, ``done``,
        ``mask`` ``(B, T+1)``) from ``state`` (``(h, c)`` each ``(B, H)``, None = zeros) ->
        the three scalar losses (means over the batch's real steps), ``loss``, their weighted
        sum, ``objective``, what training minimises, and ``state``, the final ``(h, c)``.

        ``objective`` is the weighted sum over the real steps divided by the batch's B x T
        step slots, so every step weighs the same in every batch. Dividing by the real steps
        instead (``loss``) gives a step in a nearly empty batch up to B times the weight: the
        last batches of a data epoch hold only the ends of the longest episodes, which is
        where deaths are, and a death head trained so ends each epoch predicting about twice
        the deaths it sees (Σ p(done) 1.84 per training episode, 1 observed; 2026-12-03).

        Rows that end before T run on through their (zero) padding, unmasked in the state
        but masked in the losses: such a row is at its episode's end, and its lane starts
        the next chunk from zero. (Packing the rows with ``pack_padded_sequence`` made the
        CPU backward ~10x slower: 2-6 s against 0.2 s for 16 x 500 steps, LSTM 256.) A
        batch with ``start`` ``(B, T+1)`` (``EpisodeChunks(pack=True)``) holds episodes back
        to back instead: the state is zeroed where one begins (``MDNRNN.forward``'s
        segments) and the step before it has no next-z target."""
        z = self.standardise(batch["z"].float())
        a = self.action.vector(batch["a"])
        mask = batch["mask"].bool()
        start = batch.get("start")  # episodes packed back to back (memory_train.pack)
        step_mask, next_mask = mask[:, :-1].float(), target_mask(batch).float()
        z_in = z[:, :-1]
        if self.training and self.hparams.get("z_noise", 0.0) > 0:  # torch's generator:
            z_in = z_in + self.hparams.z_noise * torch.randn_like(z_in)  # seeded per step
        pred, state = self.net(z_in, a[:, :-1], state,
                               None if start is None else start[:, :-1].bool())
        nll = gmm_nll(z[:, 1:], pred.logit_pi, pred.mu, pred.log_sigma) / self.latent_dim
        pos_weight = torch.tensor(self.hparams.done_pos_weight, device=z.device)
        bce = F.binary_cross_entropy_with_logits(
            pred.done_logit, batch["done"][:, :-1].float(), reduction="none",
            pos_weight=pos_weight)
        sums = {"gmm_nll": (nll * next_mask).sum(),
                "reward_loss": (((pred.reward - batch["r"][:, :-1].float()) ** 2)
                                * step_mask).sum(),
                "done_loss": (bce * step_mask).sum()}
        counts = {"gmm_nll": next_mask.sum(), "reward_loss": step_mask.sum(),
                  "done_loss": step_mask.sum()}
        weights = {"gmm_nll": 1.0, "reward_loss": self.hparams.reward_weight,
                   "done_loss": self.hparams.done_weight}
        out = {k: sums[k] / counts[k].clamp(min=1) for k in sums}
        out["loss"] = sum(weights[k] * out[k] for k in sums)
        slots = step_mask.numel()  # B x T: every step weighs 1 / slots, however many are real
        out["objective"] = sum(weights[k] * sums[k] for k in sums) / slots
        out["state"] = state
        return out

    def carried_state(self, batch: dict, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The state lane b of ``batch`` starts from: the state its previous chunk ended in
        (stream ``key``), zero where the chunk starts an episode (``reset``)."""
        B = batch["z"].shape[0]
        h0, c0 = self.net.initial_state(B, self.device)
        carry = self._carry.get(key)
        if carry is None or carry[0].shape[0] != B or "reset" not in batch:
            return h0, c0
        keep = (~batch["reset"].bool()).float().unsqueeze(-1).to(self.device)
        return carry[0] * keep, carry[1] * keep

    def stream_losses(self, batch: dict, key: str) -> dict[str, torch.Tensor]:
        """``losses`` from the carried state of stream ``key``, which is then updated."""
        out = self.losses(batch, self.carried_state(batch, key))
        self._carry[key] = tuple(s.detach() for s in out["state"])
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.stream_losses(batch, "train")
        if not torch.isfinite(out["loss"]):
            z = batch["z"].float()
            raise UserError(f"memory: loss is {out['loss'].item()} at step "
                            f"{self.global_step} (batch z mean {z.mean():.3g}, std "
                            f"{z.std():.3g}, max |z| {z.abs().max():.3g}); lower lr")
        self.log("train/loss", out["loss"], prog_bar=True)
        for k in ("gmm_nll", "reward_loss", "done_loss"):
            self.log(f"memory/{k}", out[k])
        return out["objective"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The training lanes' carried state goes with the weights (exact resume)."""
        if "train" in self._carry:
            checkpoint["carry"] = [s.detach().cpu() for s in self._carry["train"]]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "carry" in checkpoint:
            self._carry["train"] = tuple(s.to(self.device) for s in checkpoint["carry"])

    def on_validation_epoch_start(self) -> None:
        self._carry.pop("val", None)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.stream_losses(batch, "val")
        weight = float(batch["mask"][:, 1:].sum())  # episode-weighted means over the split
        for k in ("loss", "gmm_nll", "reward_loss", "done_loss"):
            self.log(f"val/{k}", out[k], batch_size=max(1, int(weight)), prog_bar=k == "loss")

    def configure_optimizers(self):
        # fused Adam at full precision; under mixed precision Lightning clips gradients
        # through its precision plugin, which refuses an optimizer that unscales itself
        try:
            precision = str(self.trainer.precision)
        except RuntimeError:  # not attached to a Trainer (an optimizer built by hand)
            precision = "32-true"
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                fused="mixed" not in precision)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        if self.hparams.grad_clip > 0:
            self.clip_gradients(optimizer, self.hparams.grad_clip, "norm")

    def spec(self) -> dict:
        """``class_path``/``init_args`` that rebuild this module (plain dicts)."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                "init_args": dict(self.hparams)}


#: What save_memory writes besides ``extra``; load_memory hands the rest back as ``extra``.
_CKPT_KEYS = ("kind", "spec", "state_dict", "latent_dim", "action", "latent_mean",
              "latent_std")


def save_memory(module: MDNRNNModule, path: str | Path, **extra: Any) -> None:
    """Write ``final.ckpt``: spec, weights (with the latent mean/std), action space, and
    ``extra`` plain values (train-memory: ``vision_sha256``, ``config_hash``,
    ``val_episodes``)."""
    save_checkpoint(path, CHECKPOINT_KIND, module.spec(), module.state_dict(),
                    latent_dim=module.latent_dim, action=module.action.to_dict(),
                    latent_mean=module.latent_mean.tolist(),
                    latent_std=module.latent_std.tolist(), **extra)


def load_memory(path: str | Path) -> MDNRNNModule:
    """Rebuild M from its ``final.ckpt`` alone (``weights_only=True``), in eval mode; the
    checkpoint's ``extra`` values are the module's ``extra`` dict."""
    path = Path(path)
    try:  # truncated, not a torch file, or pickled code: a one-line UserError
        ckpt = load_weights(path)
    except FileNotFoundError:
        raise UserError(f"{path}: memory checkpoint not found") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        kind = ckpt.get("kind", "a Lightning checkpoint") if isinstance(ckpt, dict) else "?"
        raise UserError(f"{path}: is {kind}, not an M checkpoint; accepted: memory/final.ckpt "
                        "written by train-memory")
    spec = ckpt["spec"]
    memory_class(spec, f"{path}: spec")
    module = build_part(spec)
    module.load_state_dict(ckpt["state_dict"])
    module.extra = {k: v for k, v in ckpt.items() if k not in _CKPT_KEYS}
    return module.eval()


# ----------------------------------------------------------------------------- stage


def target_mask(batch: dict) -> torch.Tensor:
    """bool ``(B, T)``: the steps of a chunk batch whose next z is a target, i.e. the next
    frame is real and, in a packed batch, of the same episode."""
    mask = batch["mask"].bool()
    if "start" in batch:
        return mask[:, 1:] & ~batch["start"][:, 1:].bool()
    return mask[:, 1:]


def loss_summary(module: MDNRNNModule, loader, max_batches: int | None = None
                 ) -> dict[str, float]:
    """Mean losses of ``module`` over a chunk loader (state carried, no gradients): each
    loss weighted by the steps it averages over in a batch, so the means are per step of
    the whole split however it is chunked."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    module.eval()
    module._carry.pop("summary", None)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            steps = float(batch["mask"][:, :-1].sum())
            targets = float(target_mask(batch).sum())
            for k, v in module.stream_losses(batch, "summary").items():
                if k not in ("state", "objective"):  # objective: a per-slot figure
                    w = targets if k == "gmm_nll" else steps
                    sums[k] = sums.get(k, 0.0) + float(v) * w
                    weights[k] = weights.get(k, 0.0) + w
    return {k: v / max(weights[k], 1.0) for k, v in sums.items()}


def memory_class(spec: Any, where: str = "memory_model") -> type:
    """The MDNRNNModule (sub)class a spec names; anything else is a ``UserError``."""
    return part_class(spec, MDNRNNModule, where, "an M", "jepa_wm.memory.MDNRNNModule (or a "
                      "subclass)")


def build_memory(spec: Any, latents, action: ActionSpace) -> MDNRNNModule:
    """M from its ``memory_model`` section (None: the default MDNRNNModule) with the sizes
    the data decides filled in: ``latent_dim`` from the latent set, ``action`` from the
    store, and the latent set's mean and std."""
    from jepa_wm.config import to_dict

    spec = to_dict(spec) if spec is not None else {
        "class_path": "jepa_wm.memory.MDNRNNModule", "init_args": {}}
    memory_class(spec, f"memory_model.class_path {spec.get('class_path')}")
    module = build_part(spec, latent_dim=latents.latent_dim,
                        action=ActionSpace.of(action).to_dict())
    module.latent_mean.copy_(torch.as_tensor(latents.mean))
    module.latent_std.copy_(torch.as_tensor(np.maximum(latents.std, 1e-6)))
    return module


def memory_split(store, tc, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode numbers ``(train, val)`` M uses: whole episodes within the first
    ``max_frames`` frames, ``val_fraction`` of them held out (seeded by the run's seed). The
    fidelity figures are measured on the same held-out episodes."""
    from jepa_wm.data.datasets import split_episodes

    train, val = split_episodes(store, tc.val_fraction, seed)
    if tc.max_frames is not None:  # whole episodes within the first max_frames frames
        within = store.episode_ends <= tc.max_frames
        train, val = train[within[train]], val[within[val]]
        if not len(train):
            train = np.array([0])
    return train, val


def memory_inputs(latents_dir: str | Path, data: str | None = None):
    """The latent set M trains on and its rollout store, checked to belong together."""
    from jepa_wm.data import RolloutStore

    latents = load_latents(latents_dir)
    store = RolloutStore(latents_store_path(latents, data))
    if len(latents.z) != store.num_frames:
        raise UserError(f"{latents.path}: {len(latents.z)} latents but the store has "
                        f"{store.num_frames} frames; re-run encode")
    return latents, store


def train_memory(spec: Any, tc: Any, seed: int, latents_dir: str | Path, out: str | Path,
                 data: str | None = None, config_hash: str = "", logger: Any = False) -> dict:
    """The ``train-memory`` stage: fit the M of ``spec`` (the ``memory_model`` section) on
    the training episodes of the latent set for the budget of ``tc`` (``memory_train``),
    resuming from ``last.ckpt``; validate on the held-out ones; write ``final.ckpt`` and
    ``metrics.json``; returns the metrics. ``logger``: a Lightning logger or False."""
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    latents, store = memory_inputs(latents_dir, data)
    module = build_memory(spec, latents, store.action_space)
    train_eps, val_eps = memory_split(store, tc, seed)
    return fit_memory(module, tc, seed, store, latents, train_eps, val_eps, out, config_hash,
                      start, logger)


def fit_memory(module: MDNRNNModule, tc: Any, seed: int, store, latents,
               train_eps: np.ndarray, val_eps: np.ndarray, out: Path, config_hash: str = "",
               start: float | None = None, logger: Any = False) -> dict:
    """Fit ``module`` (fresh, or loaded to be trained further) on the ``train_eps`` of
    ``store``/``latents`` for the budget of ``tc`` (``memory_train``), resuming from
    ``out/last.ckpt``; write ``final.ckpt`` (with ``val_eps`` for the fidelity figures) and
    ``metrics.json``."""
    from jepa_wm.data.datasets import EpisodeChunks

    start = time.time() if start is None else start
    # the inputs are good: now another config's checkpoints here are moved aside, never resumed
    claim(out, config_hash, "train-memory")
    seq_len = module.hparams.seq_len

    def chunks(episodes, shuffle: bool, **steps) -> EpisodeChunks:
        return EpisodeChunks(store, latents, seq_len, tc.batch_size, episodes,
                             shuffle=shuffle, seed=seed, **steps)

    # training packs episodes when asked (speed); validation and the summaries do not, so
    # their figures mean the same with pack on or off (the same steps, the same states)
    if not module.hparams.untrained:
        last = read_checkpoint(out / "last.ckpt")  # pickled code in it is refused, not run
        train = chunks(train_eps, True, start=checkpoint_step(last), pack=tc.pack)
        train.total = total_steps(train.steps(tc.max_epochs), tc.max_steps)
        _fit(module, tc, seed, train, chunks(val_eps, False) if len(val_eps) else None, out,
             resume=last is not None, logger=logger)
    metrics = {f"final_{k}": v for k, v in
               loss_summary(module, chunks(train_eps, False), max_batches=20).items()}
    if len(val_eps):
        metrics.update({f"val_{k}": v for k, v in
                        loss_summary(module, chunks(val_eps, False)).items()})
    metrics.update(untrained=bool(module.hparams.untrained),
                   train_episodes=len(train_eps), val_episodes=len(val_eps),
                   train_frames=int(store.episode_lengths[train_eps].sum()),
                   wall_time=time.time() - start, hidden_size=module.hparams.hidden_size,
                   latent_dim=module.latent_dim, resampled_z=latents.sigma is not None)
    save_memory(module.cpu(), out / "final.ckpt",
                vision_sha256=latents.meta.get("vision_sha256"), config_hash=config_hash,
                val_episodes=[int(e) for e in val_eps])
    write_json(out / "metrics.json", metrics)
    return metrics


def _fit(module: MDNRNNModule, tc: Any, seed: int, train, val, out: Path, resume: bool,
         logger: Any = False) -> None:
    """Lightning fit over the step-addressed chunk stream ``train`` (``jepa_wm.steps``):
    ``last.ckpt`` saved every ``checkpoint_every`` steps and resumed from when present,
    validation on ``val`` about once per data epoch."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    if train.total == 0:
        return
    epoch = train.epoch_length(0)  # validate (and log) about once per data epoch
    loader = torch.utils.data.DataLoader(train, batch_size=None)
    val_loader = torch.utils.data.DataLoader(val, batch_size=None) if val is not None else None
    checkpoint = ModelCheckpoint(dirpath=out, filename="step{step}", save_last=True,
                                 save_top_k=0, every_n_train_steps=tc.checkpoint_every)
    trainer = pl.Trainer(
        default_root_dir=out, max_epochs=1, max_steps=train.total,
        accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy,
        num_nodes=tc.num_nodes, precision=tc.precision,
        logger=logger,
        callbacks=[checkpoint, StepSeed(seed), ValidationLog(out / VALIDATION_LOG)],
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, epoch)), num_sanity_val_steps=0,
        enable_progress_bar=True, deterministic=False, plugins=[AtomicCheckpointIO()],
        val_check_interval=max(1, min(epoch, train.total)),
        check_val_every_n_epoch=None, limit_val_batches=1.0 if val_loader is not None else 0)
    last = out / "last.ckpt"
    if resume:
        print(f"train-memory: resuming from {last} (step {train.start})")
    quiet_false_warnings()
    trainer.fit(module, loader, val_loader, ckpt_path=str(last) if resume else None,
                weights_only=True)
    if not math.isfinite(float(trainer.callback_metrics.get("train/loss", 0.0))):
        raise UserError("memory: training ended with a non-finite loss")
