"""The bad-input catalogue (issue 7): every case runs one ``jepa-wm`` command on a bad input
and must give exactly one ``error:`` line naming the thing at fault, a non-zero exit code,
no traceback, and leave every file already written unchanged (sha256 of every file under
the work folder before and after).

    python benchmarks/faults.py            # every case; writes benchmarks/results/faults.md
    python benchmarks/faults.py --quick    # the cases that need no M or C (a check, ~30 s)

``tests/test_faults.py`` runs the same ``CASES`` (one pytest case each); the script above
runs them all and records the table. The commands run
in-process through ``jepa_wm.cli.main`` (the CLI's own error handling, without paying
~3 s of imports per case); stdout and stderr are captured at the file-descriptor level, so
output from C code (VizDoom) counts too. A few cases are also run as real subprocesses by
the tests.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import io
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]  # the repository
SMOKE = str(ROOT / "configs/experiments/smoke.yaml")
DOOM = "VizdoomTakeCover-v1"
#: train-vision flags that keep a (mistakenly) started training tiny
SMALL_V = ["--vision_train.max_steps", "1", "--vision_train.batch_size", "8",
           "--vision_train.max_frames", "300", "--vision_train.threads", "1"]
#: the same for train-memory, train-controller and evaluate
SMALL_M = ["--memory_train.max_steps", "2"]
SMALL_C = ["--controller_train.generations", "1", "--controller_train.popsize", "4",
           "--controller_train.rollouts", "1", "--controller_train.max_steps", "20"]
SMALL_E = ["--evaluate.episodes", "1", "--evaluate.dream_episodes", "2"]


# ------------------------------------------------------------------ envs no V can use

class _StateEnv(gym.Env):
    """A state-only env with no rgb_array render mode (nothing to make pixels from)."""

    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium's convention)

    def __init__(self, obs_space: gym.Space | None = None):
        self.observation_space = obs_space or gym.spaces.Box(-1, 1, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _float_image_env():
    """Observations shaped like an image but float32 in [0, 1], and no render mode."""
    return _StateEnv(gym.spaces.Box(0.0, 1.0, (64, 64, 3), np.float32))


for _id, _entry in (("FaultsStateOnly-v0", _StateEnv), ("FaultsFloatImage-v0", _float_image_env)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry)


# ------------------------------------------------------------------ the work folder

@dataclass
class Ctx:
    """The work folder: a real store and a V, latents, M and C made from it (small).

    Bad inputs of a case go to ``root/bad/<case>``; the stage folders are what a bad
    command must leave unchanged."""

    root: Path
    store: Path
    vision: Path
    latents: Path
    memory: Path | None = None
    controller: Path | None = None

    def bad(self, name: str) -> Path:
        path = self.root / "bad" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def parts(self) -> list[str]:
        """V, M and latents flags of train-controller and evaluate."""
        return ["--vision", str(self.vision), "--memory", str(self.memory), "--latents",
                str(self.latents)]


def make_ctx(root: Path, store: Path | None = None, memory: bool = True) -> Ctx:
    """Build the work folder under ``root``: copy ``store`` (or collect 4 episodes),
    save an untrained VAE V, encode the store, and (``memory``) train M and C for a
    couple of steps through the CLI, in this process."""
    import torch

    from jepa_wm.data.collect import collect
    from jepa_wm.vision import VAEModule
    from jepa_wm.vision.encode import encode_store
    from jepa_wm.vision.train import save_final

    torch.set_num_threads(1)
    root.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(root, root / "store", root / "vision" / "final.ckpt", root / "latents")
    if store is not None:
        shutil.copytree(store, ctx.store)
    else:
        # what tests/conftest.py's doom_store holds
        collect(DOOM, ctx.store, episodes=4, seed=0, workers=1, episodes_per_shard=2,
                progress=False)
    torch.manual_seed(0)
    save_final(VAEModule(latent_dim=8).eval(), ctx.vision)
    encode_store(ctx.vision, ctx.store, ctx.latents, show_progress=False)
    if memory:
        add_memory(ctx)
    return ctx


def add_memory(ctx: Ctx) -> Ctx:
    """Train M (2 steps) and C (1 generation) of ``ctx`` through the CLI, in this process."""
    from jepa_wm import cli

    root = ctx.root
    if ctx.memory is None:
        ctx.memory = root / "memory" / "final.ckpt"
        ctx.controller = root / "controller" / "best.npz"
        for argv in (["train-memory", "--config", SMOKE, "--latents", str(ctx.latents),
                      "--out", str(ctx.memory.parent), "--memory_train.max_steps", "2",
                      "--memory_train.threads", "1"],
                     ["train-controller", "--config", SMOKE, *ctx.parts(), "--out",
                      str(ctx.controller.parent), "--controller_train.generations", "1",
                      "--controller_train.popsize", "4", "--controller_train.rollouts", "1",
                      "--controller_train.max_steps", "20"]):
            with capture():
                code = cli.main(argv)
            if code != 0:
                raise RuntimeError(f"building the work folder: jepa-wm {argv[0]} exit {code}")
    return ctx


# ------------------------------------------------------------------ bad inputs

def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _copy_store(ctx: Ctx, name: str) -> Path:
    dst = ctx.bad(name) / "store"
    if not dst.exists():
        shutil.copytree(ctx.store, dst)
    return dst


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def evil_checkpoint(path: Path, spec_from: Path | None = None) -> Path:
    """A checkpoint whose pickle carries a callable (``os.system``): loading it with
    ``weights_only=False`` would hand the file's author code execution."""
    import torch

    ckpt = {"state_dict": {}, "hyper_parameters": {}, "callback": os.system}
    if spec_from is not None:  # a real V checkpoint plus the callable
        ckpt = {**torch.load(spec_from, weights_only=True), "callback": os.system}
    torch.save(ckpt, path)
    return path


def _other_vision(ctx: Ctx) -> Path:
    """A second V checkpoint (same class, other weights)."""
    import torch

    from jepa_wm.vision import VAEModule
    from jepa_wm.vision.train import save_final

    path = ctx.bad("other_vision") / "final.ckpt"
    if not path.exists():
        torch.manual_seed(1)
        save_final(VAEModule(latent_dim=8).eval(), path)
    return path


def _other_latents(ctx: Ctx) -> Path:
    """A latent set of the same store made by another V checkpoint."""
    from jepa_wm.vision.encode import encode_store

    out = ctx.bad("other_latents") / "latents"
    if not (out / "z.npy").exists():
        encode_store(_other_vision(ctx), ctx.store, out, show_progress=False)
    return out


def _small_controller(ctx: Ctx, name: str) -> Path:
    from jepa_wm.controller import ControllerFile
    from jepa_wm.envs import ActionSpace
    from jepa_wm.nets.controller import num_params

    action = ActionSpace(gym.spaces.Discrete(3))
    path = ctx.bad(name) / "other.npz"
    ControllerFile(np.zeros(num_params(5 + 7, action), np.float32), 5, 7, False,
                   action).save(path)
    return path


@contextlib.contextmanager
def disk_full_on_memmap() -> Iterator[None]:
    """Simulate a full disk where a real one reports it for a memory-mapped write (a shard's
    arrays, a latent set's z): reserving the new file's blocks fails with ENOSPC after the
    file is created (unreserved, the first page written into the hole would kill the
    process with SIGBUS instead)."""
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = os.posix_fallocate
    os.posix_fallocate = full
    try:
        yield
    finally:
        os.posix_fallocate = real


@contextlib.contextmanager
def disk_full_on_torch_save() -> Iterator[None]:
    """Simulate a full disk while a checkpoint file is written: half the bytes, then
    ENOSPC (saves into memory buffers go through)."""
    import torch

    real = torch.save

    def full(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):  # an in-memory buffer (Lightning's)
            return real(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    torch.save = full
    try:
        yield
    finally:
        torch.save = real


@dataclass
class Case:
    """One bad input. ``argv(ctx)`` builds the command (making the bad input first);
    ``expect`` is a regex the error line must match (the thing at fault, and what is
    accepted where the message says it); ``patch`` simulates a failure in-process."""

    name: str
    what: str
    argv: Callable[[Ctx], list[str]]
    expect: str
    needs_memory: bool = False
    patch: Callable[[], contextlib.AbstractContextManager] | None = None
    exit_code: int = 2


def _collect(ctx: Ctx, *args: str, out: str = "new") -> list[str]:
    return ["collect", "--episodes", "1", "--workers", "1", "--out",
            str(ctx.bad(out) / "rollouts"), *args]


def _vision_cfg(ctx: Ctx, name: str, yaml_text: str) -> list[str]:
    cfg = _write(ctx.bad(name) / "variant.yaml", yaml_text)
    return ["train-vision", "--config", SMOKE, "--config", str(cfg), "--data", str(ctx.store),
            "--out", str(ctx.vision.parent), *SMALL_V]


def _train_vision(ctx: Ctx, data: Path | str, *args: str) -> list[str]:
    return ["train-vision", "--config", SMOKE, "--data", str(data), "--out",
            str(ctx.vision.parent), *SMALL_V, *args]


def _train_memory(ctx: Ctx, latents: Path | str, *args: str) -> list[str]:
    return ["train-memory", "--config", SMOKE, "--latents", str(latents), "--out",
            str(ctx.memory.parent), *SMALL_M, *args]


def _train_controller(ctx: Ctx, name: str, *args: str) -> list[str]:
    """train-controller into a fresh folder (a finished one would skip before any check)."""
    return ["train-controller", "--config", SMOKE, *ctx.parts(), "--out",
            str(ctx.bad(name) / "controller"), *SMALL_C, *args]


def _evaluate(ctx: Ctx, name: str, *args: str, controller: Path | None = None) -> list[str]:
    return ["evaluate", "--config", SMOKE, *ctx.parts(), "--controller",
            str(controller or ctx.controller), "--out", str(ctx.bad(name) / "eval"),
            *SMALL_E, *args]


def _store_with(ctx: Ctx, name: str, damage: Callable[[Path], None]) -> Path:
    store = _copy_store(ctx, name)
    damage(store)
    return store


def _small_store(ctx: Ctx) -> Path:
    """A real store of another image size (32x32) and frame count: 1 short episode."""
    from jepa_wm.data.collect import collect

    out = ctx.bad("store32") / "rollouts"
    if not (out / "meta.json").exists():
        collect(DOOM, out, episodes=1, seed=0, workers=1, image_size=32,
                max_episode_steps=30, progress=False)
    return out


def _latents_with(ctx: Ctx, name: str, damage: Callable[[Path], None]) -> Path:
    dst = ctx.bad(name) / "latents"
    if not dst.exists():
        shutil.copytree(ctx.latents, dst)
        damage(dst)
    return dst


CASES: list[Case] = [
    # -- the command line and config files
    Case("unknown-stage", "a misspelt stage", lambda c: ["trian-vision"],
         r"unknown stage 'trian-vision'; choose one of: collect"),
    Case("missing-config-file", "a --config file that does not exist",
         lambda c: ["collect", "--config", str(c.root / "nope.yaml"), "--out", "x"],
         r"nope\.yaml"),
    Case("unknown-variant-file", "an unknown variant file",
         lambda c: ["train-vision", "--config", SMOKE, "--config",
                    str(ROOT / "configs/variants/no_such_variant.yaml"), "--data",
                    str(c.store), "--out", str(c.vision.parent)], r"no_such_variant\.yaml"),
    Case("unknown-config-key", "a config key that does not exist (vision_train.max_epoch)",
         lambda c: _vision_cfg(c, "unknown-key", "vision_train:\n  max_epoch: 3\n"),
         r"max_epoch"),
    Case("wrong-type-flag", "a word where a number goes (--episodes ten)",
         lambda c: _collect(c, "--episodes", "ten"), r"episodes.*ten"),
    Case("wrong-type-yaml", "a word where a number goes in YAML (batch_size: many)",
         lambda c: _vision_cfg(c, "wrong-type", "vision_train:\n  batch_size: many\n"),
         r"batch_size.*many"),
    Case("unknown-class-path", "an unknown class_path for vision_model",
         lambda c: _vision_cfg(c, "unknown-class", "vision_model:\n  class_path: "
                               "jepa_wm.vision.NoSuchModule\n"), r"NoSuchModule"),
    Case("class-not-a-v", "a class_path that is a net, not a V (ConvEncoder)",
         lambda c: _vision_cfg(c, "not-a-v", "vision_model:\n  class_path: "
                               "jepa_wm.nets.ConvEncoder\n"),
         r"not a vision model; accepted: jepa_wm\.vision\.VAEModule"),
    Case("unknown-timm-model", "an unknown timm model name",
         lambda c: _vision_cfg(c, "unknown-timm", "vision_model:\n  class_path: "
                               "jepa_wm.vision.JEPAModule\n  init_args:\n    encoder:\n"
                               "      class_path: jepa_wm.nets.TimmEncoder\n      init_args:\n"
                               "        model_name: no_such_net\n"),
         r"unknown timm model 'no_such_net'"),
    # -- collect
    Case("unknown-env", "an unknown env id", lambda c: _collect(c, "--env", "NoSuchEnv-v0"),
         r"env 'NoSuchEnv-v0': not a registered gymnasium id.*use e\.g\. VizdoomTakeCover"),
    Case("state-only-env", "a state-only env without rgb_array rendering",
         lambda c: _collect(c, "--env", "FaultsStateOnly-v0"),
         r"FaultsStateOnly-v0.*not images.*no rgb_array render mode"),
    Case("float-image-env", "image-shaped float observations, no render mode",
         lambda c: _collect(c, "--env", "FaultsFloatImage-v0"),
         r"FaultsFloatImage-v0.*not images"),
    Case("negative-episodes", "a negative episode count",
         lambda c: _collect(c, "--episodes", "-1"), r"episodes -1: must be 1 or more"),
    Case("zero-workers", "zero workers", lambda c: _collect(c, "--workers", "0"),
         r"workers 0: must be 1 or more"),
    Case("tiny-image", "image_size 4", lambda c: _collect(c, "--image_size", "4"),
         r"image_size 4: too small; use 8 or more"),
    Case("zero-frame-skip", "frame_skip 0", lambda c: _collect(c, "--frame_skip", "0"),
         r"frame_skip 0: must be 1 or more"),
    Case("store-of-another-env", "collect another env into an existing store",
         lambda c: ["collect", "--env", "CarRacing-v3", "--episodes", "8", "--out",
                    str(c.store)], r"env_id='VizdoomTakeCover-v1', asked for 'CarRacing-v3'"),
    Case("out-is-a-file", "a file given as collect --out",
         lambda c: _collect(c, "--out", str(_write(c.bad("file") / "notes.txt", "x"))),
         r"notes\.txt: is a file; give a folder"),
    Case("full-disk-collect", "a full disk while a shard is written (ENOSPC, simulated)",
         lambda c: ["collect", "--episodes", "5", "--workers", "1", "--out",
                    str(_copy_store(c, "full-disk"))],
         r"store/shard-00002: no space left on device", patch=disk_full_on_memmap),
    Case("zero-step-limit", "max_episode_steps 0",
         lambda c: _collect(c, "--max_episode_steps", "0"),
         r"max_episode_steps 0: must be 1 or more"),
    # -- rollout stores given to a later stage
    Case("missing-data", "a --data folder that does not exist",
         lambda c: _train_vision(c, c.root / "no_store"), r"no_store: not a rollout store"),
    Case("data-is-a-file", "a file given as --data",
         lambda c: _train_vision(c, _write(c.bad("file2") / "notes.txt", "x")),
         r"notes\.txt: not a rollout store"),
    Case("empty-store", "an empty store folder", lambda c: _train_vision(c, c.bad("empty")),
         r"empty: not a rollout store \(no meta\.json\)"),
    Case("corrupt-meta", "a corrupt meta.json",
         lambda c: _train_vision(c, _store_with(
             c, "corrupt-meta", lambda s: _write(s / "meta.json", "{ not json"))),
         r"meta\.json: not valid JSON"),
    Case("truncated-shard", "a truncated shard (half of frames.npy)",
         lambda c: _train_vision(c, _store_with(
             c, "truncated", lambda s: _truncate(s / "shard-00001" / "frames.npy"))),
         r"shard-00001/frames\.npy: truncated shard"),
    Case("missing-shard-file", "a shard file deleted",
         lambda c: _train_vision(c, _store_with(
             c, "missing-shard", lambda s: (s / "shard-00000" / "actions.npy").unlink(
                 missing_ok=True))), r"shard-00000/actions\.npy: shard file missing"),
    Case("flipped-byte", "one flipped byte in a shard (inspect)",
         lambda c: ["inspect", str(_store_with(
             c, "flipped", lambda s: _flip_byte(s / "shard-00001" / "frames.npy")))],
         r"shard-00001/frames\.npy: checksum mismatch"),
    Case("v-store-of-another-size", "train-vision with image_size 32 on a 64x64 store",
         lambda c: _train_vision(c, c.store, "--image_size", "32"),
         r"image_size.*64.*32"),
    Case("v-store-of-another-env", "train-vision with env CarRacing-v3 on a VizDoom store",
         lambda c: _train_vision(c, c.store, "--env", "CarRacing-v3"),
         r"VizdoomTakeCover-v1.*CarRacing-v3"),
    Case("zero-batch-v", "vision_train.batch_size 0",
         lambda c: _train_vision(c, c.store, "--vision_train.batch_size", "0"),
         r"vision_train\.batch_size: 0; accepted: an integer >= 1"),
    Case("negative-max-frames", "vision_train.max_frames -5",
         lambda c: _train_vision(c, c.store, "--vision_train.max_frames", "-5"),
         r"vision_train\.max_frames: -5; accepted: null \(all\) or an integer >= 1"),
    Case("val-fraction", "vision_train.val_fraction 1.5",
         lambda c: _train_vision(c, c.store, "--vision_train.val_fraction", "1.5"),
         r"val_fraction 1\.5: must be in \[0, 1\)"),
    Case("zero-latent-dim", "vision_model latent_dim 0",
         lambda c: _vision_cfg(c, "latent0", "vision_model:\n  class_path: "
                               "jepa_wm.vision.VAEModule\n  init_args:\n    latent_dim: 0\n"),
         r"vision_model\.init_args\.latent_dim: 0; accepted: an integer >= 1"),
    Case("bad-precision", "vision_train.precision 7-bit",
         lambda c: _train_vision(c, c.store, "--vision_train.precision", "7-bit", "--out",
                                 str(c.bad("precision") / "vision")),
         r"vision_train \(.*precision '7-bit'\): Precision '7-bit' is invalid"),
    Case("v-out-is-a-file", "a file given as train-vision --out",
         lambda c: _train_vision(c, c.store, "--out", str(_write(c.bad("vfile") / "v.txt", "x"))),
         r"v\.txt: is a file; give a folder for --out"),
    Case("v-out-is-the-store", "the rollout store given as train-vision --out",
         lambda c: _train_vision(c, c.store, "--out", str(c.store)),
         r"store: holds a meta\.json \(a rollout store or latent set\?\)"),
    Case("encode-into-the-store", "the rollout store given as encode --out",
         lambda c: ["encode", "--vision", str(c.vision), "--data", str(c.store), "--out",
                    str(c.store)], r"store: holds a meta\.json that is not a latent set's"),
    Case("encode-out-is-a-file", "a file given as encode --out",
         lambda c: ["encode", "--vision", str(c.vision), "--data", str(c.store), "--out",
                    str(_write(c.bad("efile") / "z.txt", "x"))],
         r"z\.txt: is a file; give a folder for --out"),
    Case("nan-lr-v", "a NaN learning rate for V (lr: .nan)",
         lambda c: _vision_cfg(c, "nan-lr", "vision_model:\n  class_path: "
                               "jepa_wm.vision.VAEModule\n  init_args:\n    lr: .nan\n"),
         r"vision_model.init_args.lr: nan; accepted: a number > 0"),
    Case("nan-loss-v", "a NaN loss in V (lr 1e30: the weights overflow after one step)",
         lambda c: _vision_cfg(c, "nan-v", "vision_model:\n  class_path: "
                               "jepa_wm.vision.VAEModule\n  init_args:\n    lr: 1.0e+30\n")
         + ["--out", str(c.bad("nan-v") / "vision"), "--vision_train.max_steps", "3"],
         r"loss is (nan|inf) at step [12]; batch frames mean"),
    Case("full-disk-encode", "a full disk while z.npy is written (ENOSPC, simulated)",
         lambda c: ["encode", "--vision", str(c.vision), "--data", str(c.store), "--out",
                    str(c.bad("full-encode") / "latents")],
         r"full-encode/latents/z\.npy: no space left on device", patch=disk_full_on_memmap),
    Case("encode-store-of-another-size", "encode a 32x32 store with a V for 64x64 frames",
         lambda c: ["encode", "--vision", str(c.vision), "--data", str(_small_store(c)),
                    "--out", str(c.latents)], r"store32/rollouts: frames of 32x32; .*64x64"),
    # -- checkpoints
    Case("vision-ckpt-missing", "a vision checkpoint that does not exist",
         lambda c: ["encode", "--vision", str(c.root / "no.ckpt"), "--data", str(c.store),
                    "--out", str(c.latents)], r"no\.ckpt: vision checkpoint not found"),
    Case("vision-ckpt-junk", "a file of junk as the vision checkpoint",
         lambda c: ["encode", "--vision", str(_write(c.bad("junk") / "junk.ckpt", "junk")),
                    "--data", str(c.store), "--out", str(c.latents)],
         r"junk\.ckpt: not a loadable checkpoint"),
    Case("vision-ckpt-truncated", "a truncated vision checkpoint",
         lambda c: ["encode", "--vision", str(_truncated_copy(c.vision, c.bad("trunc-v"))),
                    "--data", str(c.store), "--out", str(c.latents)],
         r"final\.ckpt: not a loadable checkpoint"),
    Case("pickled-callable", "a V checkpoint carrying a pickled callable (os.system)",
         lambda c: ["encode", "--vision", str(evil_checkpoint(
             c.bad("evil") / "evil.ckpt", c.vision)), "--data", str(c.store), "--out",
             str(c.latents)], r"evil\.ckpt: .*refused.*(posix|os)\.system"),
    Case("memory-as-vision", "a memory checkpoint given as the vision checkpoint",
         lambda c: ["encode", "--vision", str(c.memory), "--data", str(c.store), "--out",
                    str(c.latents)], r"memory/final\.ckpt: not a vision checkpoint",
         needs_memory=True),
    Case("vision-as-memory", "a vision checkpoint given as the memory checkpoint",
         lambda c: _train_controller(c, "v-as-m", "--memory", str(c.vision)),
         r"vision/final\.ckpt: .*not an M checkpoint", needs_memory=True),
    Case("pickled-callable-memory", "an M checkpoint carrying a pickled callable",
         lambda c: _train_controller(c, "evil-m", "--memory", str(evil_checkpoint(
             c.bad("evil-m") / "evil.ckpt", c.memory))),
         r"evil\.ckpt: .*refused.*(posix|os)\.system", needs_memory=True),
    Case("vision-of-another-run", "train-controller with a V other than the one M saw",
         lambda c: _train_controller(c, "other-v", "--vision", str(_other_vision(c))),
         r"other_vision/final\.ckpt: not the V whose latents trained", needs_memory=True),
    Case("latents-of-another-v", "train-controller with a latent set made by another V",
         lambda c: _train_controller(c, "other-z", "--latents", str(_other_latents(c))),
         r"other_latents/latents.*another vision checkpoint", needs_memory=True),
    # -- latent sets
    Case("latents-missing", "a --latents folder that does not exist",
         lambda c: _train_memory(c, c.root / "no_latents"),
         r"no_latents: not a latent set", needs_memory=True),
    Case("store-as-latents", "a rollout store given as --latents",
         lambda c: _train_memory(c, c.store), r"store: not a latent set", needs_memory=True),
    Case("truncated-latents", "a truncated z.npy",
         lambda c: _train_memory(c, _latents_with(
             c, "trunc-z", lambda d: _truncate(d / "z.npy"))),
         r"z\.npy: truncated or corrupt", needs_memory=True),
    Case("latents-of-another-store", "train-memory with --data a store the latents are not of",
         lambda c: _train_memory(c, c.latents, "--data", str(_small_store(c))),
         r"latents: \d+ latents but the store has \d+ frames; re-run encode", needs_memory=True),
    Case("zero-batch-m", "memory_train.batch_size 0",
         lambda c: _train_memory(c, c.latents, "--memory_train.batch_size", "0", "--out",
                                 str(c.bad("batch0-m") / "memory")),
         r"memory_train\.batch_size: 0; accepted: an integer >= 1", needs_memory=True),
    Case("zero-seq-len", "memory_model seq_len 0",
         lambda c: _train_memory(c, c.latents, "--memory_model.init_args.seq_len", "0",
                                 "--out", str(c.bad("seq0") / "memory")),
         r"memory_model\.seq_len: 0; accepted: an integer >= 1", needs_memory=True),
    Case("nan-loss-m", "a NaN loss in M (lr 1e30: the weights overflow after one step)",
         lambda c: _train_memory(c, c.latents, "--config", str(_write(
             c.bad("nan-m") / "nan.yaml", "memory_model:\n  class_path: jepa_wm.memory."
             "MDNRNNModule\n  init_args:\n    lr: 1.0e+30\n")), "--out",
             str(c.bad("nan-m") / "memory"), "--memory_train.max_steps", "3"),
         r"loss is (nan|inf) at step [12]", needs_memory=True),
    Case("negative-z-noise", "memory_model z_noise -1",
         lambda c: _train_memory(c, c.latents, "--memory_model.init_args.z_noise", "-1",
                                 "--out", str(c.bad("znoise") / "memory")),
         r"memory_model\.z_noise: -1\.0; accepted: a number >= 0", needs_memory=True),
    Case("compute-budget-for-m", "a seconds budget for M (memory_train.max_time 60)",
         lambda c: _train_memory(c, c.latents, "--memory_train.max_time", "60",
                                 "--out", str(c.bad("mtime") / "memory")),
         r"memory_train\.max_time: 60\.0; accepted: null .*vision_train\.max_time",
         needs_memory=True),
    # -- JEPA options, compute budgets, probes
    Case("zero-context-frames", "JEPAModule context_frames 0",
         lambda c: _vision_cfg(c, "ctx0", "vision_model:\n  class_path: jepa_wm.vision."
                               "JEPAModule\n  init_args:\n    context_frames: 0\n"),
         r"JEPAModule\.context_frames 0: accepted: an integer >= 1"),
    Case("rollout-discount-above-one", "JEPAModule rollout_discount 1.5",
         lambda c: _vision_cfg(c, "rho", "vision_model:\n  class_path: jepa_wm.vision."
                               "JEPAModule\n  init_args:\n    rollout_discount: 1.5\n"),
         r"JEPAModule\.rollout_discount 1\.5: accepted: in \(0, 1\]"),
    Case("unknown-sigreg-weighting", "JEPAModule sigreg_weighting sum (not a choice)",
         lambda c: _vision_cfg(c, "sigw", "vision_model:\n  class_path: jepa_wm.vision."
                               "JEPAModule\n  init_args:\n    sigreg_weighting: sum\n"),
         r"sigreg_weighting"),
    Case("negative-max-flops", "vision_train.max_flops -1",
         lambda c: _train_vision(c, c.store, "--vision_train.max_flops", "-1"),
         r"vision_train\.max_flops: -1\.0; accepted: null or a number > 0"),
    Case("probe-latents-of-another-store", "probe with --data a store the latents are not of",
         lambda c: ["probe", "--config", SMOKE, "--latents", str(c.latents), "--data",
                    str(_small_store(c)), "--out", str(c.bad("probe") / "probe")],
         r"latents: holds \d+ frames, .* encode this store again"),
    # -- controller and evaluation
    Case("tau-zero", "controller_train.tau 0", lambda c: _train_controller(
        c, "tau0", "--controller_train.tau", "0"),
        r"controller_train\.tau: 0\.0; accepted: a number > 0",
        needs_memory=True),
    Case("tau-negative-eval", "evaluate.taus [-1]",
         lambda c: _evaluate(c, "taus", "--evaluate.taus", "[-1]"),
         r"evaluate\.taus: -1\.0; accepted: temperatures > 0",
         needs_memory=True),
    Case("zero-rollouts", "controller_train.rollouts 0", lambda c: _train_controller(
        c, "rollouts0", "--controller_train.rollouts", "0"),
        r"controller_train\.rollouts: 0; accepted: >= 1", needs_memory=True),
    Case("unknown-where", "controller_train.where moon (refused at parse time)",
         lambda c: _train_controller(c, "where", "--controller_train.where", "moon"),
         r"controller_train\.where\": Expected a typing\.Literal\['dream', 'real'\]\. Got "
         r"value: moon", needs_memory=True),
    Case("unknown-done-rule", "controller_train.done maybe in YAML (refused at parse time)",
         lambda c: _vision_cfg(c, "done-rule", "controller_train:\n  done: maybe\n"),
         r"controller_train\.done\": Expected a typing\.Literal\['threshold', 'sample'\]"),
    Case("popsize-one", "controller_train.popsize 1", lambda c: _train_controller(
        c, "pop1", "--controller_train.popsize", "1"),
        r"controller_train\.popsize: 1; accepted: >= 2", needs_memory=True),
    Case("controller-size", "a controller whose size does not match M",
         lambda c: _evaluate(c, "size", controller=_small_controller(c, "size")),
         r"other\.npz: controller for latent 5, hidden 7", needs_memory=True),
    Case("controller-junk", "a file of junk as the controller",
         lambda c: _evaluate(c, "cjunk", controller=_write(c.bad("cjunk") / "best.npz", "junk")),
         r"best\.npz: not a controller file", needs_memory=True),
    Case("controller-is-a-folder", "a folder given as --controller",
         lambda c: _evaluate(c, "cdir", controller=c.bad("cdir")),
         r"cdir: a folder where a file is expected; give a file", needs_memory=True),
    Case("missing-fidelity-file", "evaluate --fidelity naming a file that does not exist",
         lambda c: _evaluate(c, "nofid", "--fidelity", str(c.bad("nofid") / "fidelity.json")),
         r"fidelity\.json: not found; run `jepa-wm fidelity` first", needs_memory=True),
    Case("zero-fidelity-dreams", "evaluate.fidelity_dreams 0",
         lambda c: ["fidelity", "--config", SMOKE, "--memory", str(c.memory), "--latents",
                    str(c.latents), "--out", str(c.bad("fid0")), "--evaluate.fidelity_dreams",
                    "0"],
         r"evaluate\.fidelity_dreams: 0; accepted: >= 1", needs_memory=True),
    Case("negative-hold-episodes", "evaluate.fidelity_hold_episodes -1",
         lambda c: ["fidelity", "--config", SMOKE, "--memory", str(c.memory), "--latents",
                    str(c.latents), "--out", str(c.bad("hold-1")),
                    "--evaluate.fidelity_hold_episodes", "-1"],
         r"evaluate\.fidelity_hold_episodes: -1; accepted: >= 0", needs_memory=True),
    Case("iterate-negative-hold-episodes", "evaluate.fidelity_hold_episodes -1 for iterate "
         "rounds (each round's M is measured)",
         lambda c: ["iterate", "--config", SMOKE, *c.parts(), "--controller",
                    str(c.controller), "--out", str(c.bad("iter-hold") / "iterate"),
                    "--iterate.rounds", "1", "--evaluate.fidelity_hold_episodes", "-1"],
         r"evaluate\.fidelity_hold_episodes: -1; accepted: >= 0", needs_memory=True),
    Case("iterate-epsilon-above-one", "iterate.epsilon 2 (a chance)",
         lambda c: ["iterate", "--config", SMOKE, *c.parts(), "--controller",
                    str(c.controller), "--out", str(c.bad("iter-eps") / "iterate"),
                    "--iterate.rounds", "1", "--iterate.epsilon", "2"],
         r"iterate\.epsilon: 2\.0; accepted: 0 to 1", needs_memory=True),
    Case("iterate-zero-workers", "iterate.workers 0 (real-env processes for C's episodes)",
         lambda c: ["iterate", "--config", SMOKE, *c.parts(), "--controller",
                    str(c.controller), "--out", str(c.bad("iter-w0") / "iterate"),
                    "--iterate.rounds", "1", "--iterate.workers", "0"],
         r"iterate\.workers: 0; accepted: >= 1", needs_memory=True),
    Case("missing-controller-file", "evaluate --controller naming a file that does not exist",
         lambda c: _evaluate(c, "noc", controller=c.bad("noc") / "best.npz"),
         r"noc/best\.npz: not found; give the path of an existing file", needs_memory=True),
    Case("zero-eval-episodes", "evaluate.episodes 0",
         lambda c: _evaluate(c, "eps0", "--evaluate.episodes", "0"), r"evaluate\.episodes.*>= 1",
         needs_memory=True),
    Case("missing-sweep-file", "a sweep file that does not exist",
         lambda c: ["sweep", str(c.root / "no_sweep.yaml"), "--out", str(c.root / "runs")],
         r"no_sweep\.yaml"),
    Case("missing-experiment-folder", "report on a folder that does not exist",
         lambda c: ["report", str(c.root / "runs" / "nothing")], r"runs/nothing"),
    Case("full-disk-memory", "a full disk while M's final.ckpt is written (simulated)",
         lambda c: _train_memory(c, c.latents, "--out", str(_copied_dir(
             c.memory.parent, c.bad("full-m") / "memory", keep_done=False))),
         r"memory/final\.ckpt: no space left on device", needs_memory=True,
         patch=disk_full_on_torch_save),
]


def _truncated_copy(path: Path, folder: Path) -> Path:
    dst = folder / path.name
    if not dst.exists():
        shutil.copy(path, dst)
        _truncate(dst)
    return dst


def _copied_dir(src: Path, dst: Path, keep_done: bool = True) -> Path:
    """A copy of a stage folder (without its DONE marker unless ``keep_done``): a run that
    will redo its last step over files already there."""
    if not dst.exists():
        shutil.copytree(src, dst)
        if not keep_done:
            (dst / "DONE.json").unlink(missing_ok=True)
    return dst


# ------------------------------------------------------------------ running a case

def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (empty folders do not count)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Captured:
    out: str = ""
    err: str = ""


@contextlib.contextmanager
def capture() -> Iterator[Captured]:
    """Capture stdout and stderr of this process, Python's and C's (file descriptors)."""
    cap = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    files = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115  (closed below)
    py_out, py_err = io.StringIO(), io.StringIO()
    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_err):
            yield cap
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        texts = []
        for f in files:
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
            f.close()
        cap.out = texts[0] + py_out.getvalue()
        cap.err = texts[1] + py_err.getvalue()


@dataclass
class Outcome:
    case: Case
    argv: list[str]
    exit_code: int
    stderr: str
    unchanged: bool
    changed: list[str] = field(default_factory=list)  # files there before, now altered
    seconds: float = 0.0
    new: list[str] = field(default_factory=list)  # files that did not exist before

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("error:")]

    @property
    def error_line(self) -> str:
        lines = self.error_lines
        return lines[-1] if lines else ""

    def problems(self) -> list[str]:
        """Why this outcome fails the catalogue's bar (empty = it passes)."""
        bad = []
        if self.exit_code != self.case.exit_code:
            bad.append(f"exit code {self.exit_code}, expected {self.case.exit_code}")
        if len(self.error_lines) != 1:
            bad.append(f"{len(self.error_lines)} error lines")
        if "Traceback" in self.stderr:
            bad.append("traceback printed")
        if not re.search(self.case.expect, self.error_line):
            bad.append(f"error line does not match {self.case.expect!r}")
        if not self.unchanged:
            bad.append(f"files changed: {self.changed[:5]}")
        return bad


def run_case(case: Case, ctx: Ctx) -> Outcome:
    """Make the case's bad input, then run its command in-process and check the files."""
    from jepa_wm import cli

    argv = case.argv(ctx)
    before = tree_digest(ctx.root)
    patch = case.patch() if case.patch else contextlib.nullcontext()
    t0 = time.perf_counter()
    with capture() as cap, patch:
        code = cli.main(argv)
    seconds = time.perf_counter() - t0
    after = tree_digest(ctx.root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    return Outcome(case, argv, code, cap.err, not changed, changed, seconds,
                   sorted(after.keys() - before.keys()))


# ------------------------------------------------------------------ the results file

def _short(argv: list[str], ctx: Ctx) -> str:
    """The command as a user would type it: paths relative, the tiny-budget flags left out."""
    text = " ".join(argv)
    for small in (SMALL_V, SMALL_M, SMALL_C, SMALL_E):
        text = text.replace(" " + " ".join(small), "")
    text = text.replace(str(ctx.root) + "/", "").replace(str(ROOT) + "/", "")
    return f"jepa-wm {text.replace('configs/experiments/smoke.yaml', 'smoke.yaml')}"


def _cell(text: str, n: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def table(outcomes: list[Outcome], ctx: Ctx) -> str:
    rows = ["| # | bad input | command | error line seen | exit | files unchanged | pass |",
            "|---|---|---|---|---|---|---|"]
    for i, o in enumerate(outcomes, 1):
        line = o.error_line.replace(str(ctx.root) + "/", "")
        rows.append(f"| {i} | {_cell(o.case.what, 80)} | `{_cell(_short(o.argv, ctx), 220)}` | "
                    f"`{_cell(line, 400)}` | {o.exit_code} | "
                    f"{'yes' if o.unchanged else 'NO'} | "
                    f"{'yes' if not o.problems() else 'NO: ' + '; '.join(o.problems())} |")
    return "\n".join(rows)


def write_results(outcomes: list[Outcome], ctx: Ctx, quick: bool, path: Path) -> None:
    """Replace the generated catalogue section of ``path``, keeping the hand-written rest."""
    import torch

    passed = sum(not o.problems() for o in outcomes)
    block = "\n".join([
        "<!-- catalogue: generated by `python benchmarks/faults.py`; do not edit by hand -->",
        (f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
         f"{' (--quick)' if quick else ''} on {platform.node()} ({os.cpu_count()} cores), "
         f"Python {platform.python_version()}, torch {torch.__version__}: "
         f"**{passed} of {len(outcomes)} cases pass** (one `error:` line matching the "
         "expected text, the expected exit code, no traceback, every file that existed "
         "under the work folder byte-identical before and after). `smoke.yaml` is "
         "configs/experiments/smoke.yaml; the commands also carry tiny-budget flags "
         "(`SMALL_V`, `SMALL_M`, `SMALL_C`, `SMALL_E`), left out here."),
        "", table(outcomes, ctx), "",
        "<!-- end catalogue -->"])
    text = path.read_text() if path.exists() else "# Faults and bad input (issue 7)\n\n"
    start, end = "<!-- catalogue:", "<!-- end catalogue -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
