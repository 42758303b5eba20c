"""``train-vision``: fit any V on a rollout store with a Lightning Trainer.

Checkpoints every ``checkpoint_every`` steps (``last.ckpt``: a killed run resumes exactly,
``jepa_wm.steps``), collapse diagnostics every data epoch, then ``final.ckpt`` (weights +
spec only, ``load_vision`` rebuilds it), ``metrics.json`` and ``DONE.json``. A second run
with the same config does nothing.

The budget is steps (``max_epochs``/``max_steps``), FLOPs (``max_flops``: the steps follow
from the FLOPs of one training step, counted) or seconds (``max_time``); ``metrics.json``
``budget`` records which, with the steps, FLOPs and seconds V got, so a report can compare
V's at equal compute instead of equal steps.
"""

from __future__ import annotations

import copy
import datetime
import inspect
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from jsonargparse import Namespace
from lightning_fabric.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset, Subset

from jepa_wm import io
from jepa_wm.config import check_train_config, to_dict
from jepa_wm.contract import identity
from jepa_wm.data.datasets import FrameDataset, WindowDataset, split_episodes
from jepa_wm.data.store import RolloutStore
from jepa_wm.steps import (
    VALIDATION_LOG,
    AtomicCheckpointIO,
    StepBatches,
    StepSeed,
    ValidationLog,
    checkpoint_step,
    quiet_false_warnings,
    read_checkpoint,
    total_steps,
)
from jepa_wm.vision.base import VISION_KIND, VisionModule, build_vision, vision_class

log = logging.getLogger(__name__)

#: validation diagnostics use at most this many evenly spaced samples (RAM and time stay flat)
MAX_VAL_ITEMS = 1024


class FramesPerSecond(pl.Callback):
    """Logs ``train/frames_per_s``: input frames of the batch / wall time of the step."""

    def __init__(self):
        self.frames = 0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        obs = batch["obs"]
        n = obs.numel() // int(np.prod(obs.shape[-3:]))
        dt = time.perf_counter() - self._t0
        self.frames += n
        self.seconds += dt
        pl_module.log("train/frames_per_s", n / max(dt, 1e-9), prog_bar=True)

    @property
    def mean(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")


class LastValidation(pl.Callback):
    """Remembers the ``global_step`` of the last validation run during ``fit`` (or None)."""

    step: int | None = None

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.step = trainer.global_step


class NonFiniteLoss(pl.Callback):
    """Stops at the first NaN/inf loss with the step and the batch's statistics."""

    def on_before_backward(self, trainer, pl_module, loss):
        if torch.isfinite(loss):
            return
        obs = pl_module.to_float(pl_module.first_frames(self._batch))
        raise io.UserError(
            f"training loss is {loss.item()} at step {trainer.global_step}; batch frames "
            f"mean {obs.mean():.4f} std {obs.std():.4f} min {obs.min():.4f} max "
            f"{obs.max():.4f}; lower vision_model.init_args.lr or check the data")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch = batch


#: (config key, store meta.json key) pairs that must agree: V learns the frames of one env
#: at one size, and downstream stages play that env at that size.
STORE_KEYS = (("env", "env_id"), ("image_size", "image_size"), ("frame_skip", "frame_skip"))


def check_store_matches(cfg: Namespace, store: RolloutStore) -> None:
    """The config's env, image size and frame skip must be the store's (a store of another
    env or size is refused, naming both values)."""
    for key, meta_key in STORE_KEYS:
        have, want = store.meta.get(meta_key), cfg[key]
        if have != want:
            raise io.UserError(f"{store.root}: a store of {meta_key}={have!r}, the config asks "
                               f"for {key}={want!r}; pass --{key} {have} (or the experiment "
                               "config the store was collected with), or collect a new store")


def resolve_spec(vision_model: Any, store: RolloutStore) -> dict:
    """The ``vision_model`` section as a spec with what the store decides filled in:
    ``action_dim`` (when the model takes one and it is unset) and ``image_size`` (the stored
    frames' size)."""
    if vision_model is None:
        raise io.UserError("vision_model: not set; add a variant config, e.g. "
                           "--config configs/variants/vae.yaml")
    spec = to_dict(vision_model)
    cls = vision_class(spec, f"vision_model.class_path {spec.get('class_path')}")
    params = inspect.signature(cls.__init__).parameters
    args = spec.setdefault("init_args", {})
    lr, latent_dim = args.get("lr"), args.get("latent_dim")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise io.UserError(f"vision_model.init_args.lr: {lr}; accepted: a number > 0")
    if latent_dim is not None and latent_dim < 1:
        raise io.UserError(f"vision_model.init_args.latent_dim: {latent_dim}; accepted: an "
                           "integer >= 1")
    if "action_dim" in params and args.get("action_dim") is None:
        args["action_dim"] = store.action_space.dim
    if "image_size" in params:
        args["image_size"] = int(store.image_shape[-1])
    return spec


def _limit_episodes(store: RolloutStore, max_frames: int | None) -> np.ndarray:
    """The first episodes holding at most ``max_frames`` frames (at least two episodes)."""
    eps = np.arange(store.num_episodes)
    if max_frames is None:
        return eps
    keep = np.searchsorted(np.cumsum(store.episode_lengths), max_frames, side="right")
    return eps[: max(int(keep), min(2, len(eps)))]


def _evenly(ds: Dataset, n: int) -> Dataset:
    if len(ds) <= n:
        return ds
    return Subset(ds, np.linspace(0, len(ds) - 1, n).round().astype(int).tolist())


def make_datasets(model: VisionModule, store: RolloutStore, train_cfg: Any,
                  seed: int) -> tuple[Dataset, Dataset]:
    """Train and validation views of the store, split by episode (``val_fraction``)."""
    if store.num_episodes < 2:
        raise io.UserError(f"{store.root}: holds {store.num_episodes} episode(s); V needs at "
                           "least 2 (one is held out for validation)")
    eps = _limit_episodes(store, train_cfg.max_frames)
    tr, va = split_episodes(store, max(train_cfg.val_fraction, 1e-9), seed)
    tr, va = np.intersect1d(tr, eps), np.intersect1d(va, eps)
    if not len(tr) or not len(va):  # max_frames cut one side away: split what is kept
        va, tr = eps[:1], eps[1:]

    def view(episodes):
        if model.data_view == "windows":
            return WindowDataset(store, seq_len=model.window, stride=1, episodes=episodes,
                                 tail=model.window_tail)
        return FrameDataset(store, episodes=episodes)

    return view(tr), _evenly(view(va), MAX_VAL_ITEMS)


def _loaders(model, store, train_cfg, seed: int) -> tuple[DataLoader, DataLoader]:
    """The training loader (``StepBatches``: step g's batch depends on the seed and g alone;
    its ``start`` is set when resuming) and the validation loader."""
    train_ds, val_ds = make_datasets(model, store, train_cfg, seed)
    workers = {"num_workers": train_cfg.num_workers,
               "persistent_workers": train_cfg.num_workers > 0}
    B = train_cfg.batch_size
    sampler = StepBatches(len(train_ds), B, seed)
    sampler.total = total_steps(train_cfg.max_epochs * sampler.per_epoch, train_cfg.max_steps)
    train = DataLoader(train_ds, batch_sampler=sampler, **workers)
    return train, DataLoader(val_ds, batch_size=B, shuffle=False, **workers)


def step_flops(model: VisionModule, loader: DataLoader, seed: int) -> int:
    """FLOPs of one training step of ``model`` (forward and backward of its loss on the
    loader's step-0 batch), counted by torch's ``FlopCounterMode`` on a copy: the model, its
    statistics and the training's randomness are untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    first = StepBatches(len(loader.dataset), loader.batch_sampler.batch_size, seed, total=1)
    batch = next(iter(DataLoader(loader.dataset, batch_sampler=first)))
    probe = copy.deepcopy(model).train()
    state = torch.random.get_rng_state()
    try:
        with warnings.catch_warnings(), FlopCounterMode(display=False) as counter:
            warnings.simplefilter("ignore")  # self.log outside a Trainer is a no-op
            probe.training_step(batch, 0).backward()
    finally:
        torch.random.set_rng_state(state)
    return int(counter.get_total_flops())


def save_final(model: VisionModule, path: Path, **extra: Any) -> None:
    """Weights + spec only, atomically, in the one checkpoint format of V and M
    (``io.save_checkpoint``): what ``load_vision`` needs, nothing pickled."""
    io.save_checkpoint(path, VISION_KIND, model.spec, model.state_dict(), **extra)


def _trainer(t: Any, out: Path, callbacks: list, logger: Any, total: int,
             per_epoch: int) -> pl.Trainer:
    """The Lightning Trainer of ``vision_train``: one pass over the step stream of ``total``
    steps, validated every data epoch (``per_epoch`` steps). Settings Lightning rejects (an
    unknown accelerator or precision, a missing backend) are one-line errors naming the
    section (``t``: ``vision_train``)."""
    try:
        return pl.Trainer(
            max_epochs=1, max_steps=total, accelerator=t.accelerator, devices=t.devices,
            max_time=(datetime.timedelta(seconds=t.max_time) if t.max_time else None),
            strategy=t.strategy, num_nodes=t.num_nodes, precision=t.precision, logger=logger,
            callbacks=callbacks, default_root_dir=str(out), num_sanity_val_steps=0,
            log_every_n_steps=1, enable_model_summary=False, deterministic=False,
            plugins=[AtomicCheckpointIO()], val_check_interval=max(1, min(per_epoch, total)),
            check_val_every_n_epoch=None)
    except (MisconfigurationException, ValueError, ImportError, RuntimeError) as e:
        raise io.UserError(f"vision_train (accelerator {t.accelerator!r}, devices "
                           f"{t.devices!r}, strategy {t.strategy!r}, precision "
                           f"{t.precision!r}): {' '.join(str(e).split())[:300]}") from None


def _train_seconds(trainer: pl.Trainer, fps: FramesPerSecond) -> float:
    """Training seconds: Lightning's timer (which counts a resumed run's earlier part) when
    ``max_time`` is set, else this call's summed step times."""
    from pytorch_lightning.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return float(timer.time_elapsed("train")) if timer is not None else fps.seconds


def _budget(train_cfg: Any, sampler: StepBatches, flops: int) -> dict[str, Any]:
    """What limits V's training (``kind``: steps, flops or seconds, and its ``limit``);
    with ``max_flops`` the sampler's step count is set from the FLOPs per step."""
    if train_cfg.max_flops is not None:
        if flops <= 0:
            raise io.UserError("vision_train.max_flops: this V has no training step to "
                               "count (it is never trained); leave max_flops null")
        sampler.total = max(1, int(train_cfg.max_flops // flops))
        kind, limit = "flops", train_cfg.max_flops
    elif train_cfg.max_time is not None:
        kind, limit = "seconds", train_cfg.max_time
    else:
        kind, limit = "steps", sampler.total
        if flops and 0 < sampler.total < train_cfg.max_steps:  # a silent cut mislabels V
            print(f"train-vision: vision_train.max_epochs {train_cfg.max_epochs} is "
                  f"{sampler.total} steps on this store, fewer than max_steps "
                  f"{train_cfg.max_steps}: training stops at {sampler.total} (raise "
                  "max_epochs to train max_steps)")
    return {"kind": kind, "limit": limit, "flops_per_step": flops}


def open_training(cfg: Namespace, data: str | Path, out: str | Path
                  ) -> tuple[RolloutStore, dict, str]:
    """Check what ``train-vision`` was given (the ``vision_train`` values, the ``--out``
    folder, the store against the config's env and size); returns the store, V's spec with
    the store's sizes filled in, and the stage's identity (``contract.identity``)."""
    check_train_config(cfg.vision_train, "vision_train")
    if Path(out).exists() and not Path(out).is_dir():
        raise io.UserError(f"{out}: is a file; give a folder for --out")
    if (Path(out) / "meta.json").exists():  # a store's or a latent set's, never V's
        raise io.UserError(f"{out}: holds a meta.json (a rollout store or latent set?); give "
                           "train-vision its own --out folder")
    store = RolloutStore(data)
    check_store_matches(cfg, store)
    spec = resolve_spec(cfg.vision_model, store)
    # threads and loader workers change speed, not results: a rerun with others resumes
    return store, spec, vision_identity(cfg, store)


def vision_identity(cfg: Namespace, store: RolloutStore) -> str:
    """The identity of the V that ``cfg`` trains on ``store`` (``contract.identity``, chained
    to the store's content): what train-vision writes into its ``DONE.json``."""
    return identity("train-vision", cfg, upstream=io.hash_obj(store.content_meta))


def train_vision(spec: dict, tc: Any, seed: int, store: RolloutStore, out: str | Path,
                 config_hash: str = "", logger: Any = False) -> Path:
    """Train the V of ``spec`` (``resolve_spec``) on ``store`` for the budget of ``tc``
    (``vision_train``) into ``out``, resuming from ``last.ckpt``; returns ``final.ckpt``.
    ``logger``: a Lightning logger or False."""
    from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar

    out = Path(out)
    final = out / "final.ckpt"
    if tc.threads:
        torch.set_num_threads(tc.threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = build_vision(spec)
    train_loader, val_loader = _loaders(model, store, tc, seed)
    trainable = getattr(model, "trainable", True)
    flops = step_flops(model, train_loader, seed) if trainable else 0
    budget = _budget(tc, train_loader.batch_sampler, flops)
    io.claim(out, config_hash, "train-vision")  # another config's work is moved aside
    last = out / "last.ckpt"
    resumed = read_checkpoint(last)  # a last.ckpt carrying pickled code is refused, not run
    sampler = train_loader.batch_sampler
    sampler.start = checkpoint_step(resumed)
    fps = FramesPerSecond()
    ckpt = ModelCheckpoint(dirpath=out, filename="step{step}", save_last=True, save_top_k=0,
                           every_n_train_steps=tc.checkpoint_every)
    last_val = LastValidation()
    trainer = _trainer(tc, out, [ckpt, fps, last_val, NonFiniteLoss(), StepSeed(seed),
                                  ValidationLog(out / VALIDATION_LOG), RichProgressBar()],
                       logger, sampler.total, sampler.per_epoch)
    t0 = time.time()
    if trainable and sampler.total:
        if resumed is not None:
            print(f"train-vision: resuming from {last} (step {sampler.start})")
        quiet_false_warnings()
        trainer.fit(model, train_loader, val_loader,
                    ckpt_path=str(last) if resumed is not None else None, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # last train step
    if last_val.step != trainer.global_step:  # the final weights were not validated yet
        trainer.validate(model, val_loader, verbose=False)  # (training stopped mid-epoch)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    metrics.update({f"vision/{k}": v for k, v in model.diagnostics.items()})
    metrics.update({"loss": metrics.get("train/loss", float("nan")),
                    "effective_rank": model.diagnostics["effective_rank"],
                    "latent_dim": model.latent_dim, "steps": trainer.global_step,
                    "frames_per_s": fps.mean, "wall_time_s": time.time() - t0,
                    "budget": {**budget, "steps": trainer.global_step,
                               "flops": flops * trainer.global_step,
                               "seconds": _train_seconds(trainer, fps)}})
    metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in metrics.items()}
    save_final(model, final, global_step=trainer.global_step)
    io.write_json(out / "metrics.json", metrics)
    if logger:
        logger.experiment.summary.update(metrics)
        logger.experiment.finish()
    io.mark_done(out, config_hash, final="final.ckpt", steps=trainer.global_step)
    print(f"train-vision: wrote {final} (steps {trainer.global_step}, effective rank "
          f"{model.diagnostics['effective_rank']:.2f} of {model.latent_dim})")
    return final
