"""The fault suite (issue 7): SIGKILL at random points of each stage, then resume; the bad-input
catalogue (``tests/fault_cases.py``: one-line error, non-zero exit, no traceback, nothing
already written changed); checkpoints that carry pickled code; a simulated full disk.

Kills of ``collect`` (tests/test_collect.py, byte-identical store) and ``train-controller``
(tests/test_controller.py, exact replay) are tested beside their stages; here are
``train-vision`` (beside tests/test_vision.py's resume test), ``encode``, ``train-memory``,
``evaluate`` and ``sweep``.
Run alone with ``make test-faults``.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from jepa_wm import cli
from jepa_wm.io import UserError, write_json
from jepa_wm.steps import FALSE_WARNINGS

pytestmark = pytest.mark.faults
torch.set_num_threads(1)  # other test processes share the 2 cores

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/experiments/smoke.yaml")
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}

import fault_cases as faults

# ------------------------------------------------------------------ helpers

def jepa_wm(*args, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "jepa_wm.cli", *map(str, args)], env=ENV,
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                          **kwargs)


def in_process(*args) -> None:
    """The CLI in this process (no import cost); fails the test on a non-zero exit."""
    with faults.capture() as cap:
        code = cli.main([str(a) for a in args])
    assert code == 0, f"jepa-wm {args[0]} exit {code}: {cap.err[-3000:]}"


def resume_in_process(*args) -> None:
    """``in_process`` for a killed run's resume, which must not show Lightning's warning that
    its data is "not resumable" (ours is, exactly: ``steps.FALSE_WARNINGS``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        in_process(*args)
    false = [str(w.message) for w in caught if str(w.message).startswith(FALSE_WARNINGS)]
    assert not false, false


def has_children(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False


def kill_when(args, ready: Callable[[int], bool], extra_delay: float = 0.0,
              timeout: float = 300) -> None:
    """Start ``jepa-wm args`` in its own session, wait until ``ready(pid)``, sleep
    ``extra_delay``, then SIGKILL the whole process group (the CLI and any workers)."""
    with tempfile.TemporaryFile() as err_file:  # not a pipe: a full pipe stalls the process
        proc = subprocess.Popen([sys.executable, "-m", "jepa_wm.cli", *map(str, args)],
                                env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err_file,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not ready(proc.pid) and proc.poll() is None:
                assert time.monotonic() < deadline, f"jepa-wm {args[0]}: not ready in {timeout} s"
                time.sleep(0.005)
            time.sleep(extra_delay)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, \
        f"jepa-wm {args[0]} ended (exit {proc.returncode}) before the kill: {err[-2000:]}"


# ------------------------------------------------------------------ the work folder

@pytest.fixture(scope="module")
def ctx(doom_store, tmp_path_factory):
    """A copy of the doom store, an untrained VAE V (latent 8) and its latents."""
    return faults.make_ctx(tmp_path_factory.mktemp("faults") / "work", store=doom_store,
                           memory=False)


@pytest.fixture(scope="module")
def ctx_m(ctx):
    """``ctx`` plus M (train-memory, 2 steps) and C (train-controller, 1 generation)."""
    return faults.add_memory(ctx)


# ------------------------------------------------------------------ the catalogue

def test_the_catalogue_has_at_least_25_distinct_bad_inputs():
    names = [c.name for c in faults.CASES]
    assert len(names) == len(set(names)) >= 25


@pytest.mark.parametrize("case", faults.CASES, ids=lambda c: c.name)
def test_bad_input_gives_one_line_error_and_changes_nothing(case, request):
    ctx = request.getfixturevalue("ctx_m" if case.needs_memory else "ctx")
    outcome = faults.run_case(case, ctx)
    assert not outcome.problems(), f"{outcome.problems()}\n{outcome.stderr[-3000:]}"


def test_a_real_process_prints_one_line_and_a_traceback_only_with_debug(ctx, tmp_path):
    evil = faults.evil_checkpoint(tmp_path / "evil.ckpt", ctx.vision)
    args = ["encode", "--vision", evil, "--data", ctx.store, "--out", tmp_path / "latents"]
    plain = jepa_wm(*args)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]  # one line
    assert re.search(r"evil\.ckpt: refused: .*posix\.system", plain.stderr)
    debug = jepa_wm(*args, "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert not (tmp_path / "latents").exists()


# ------------------------------------------------------------------ checkpoints

class Gadget:
    """A custom class: pickling an instance stores a reference to this module's code."""


@pytest.mark.parametrize("payload,named", [(os.system, "posix.system"),
                                           (Gadget(), "Gadget")], ids=["function", "instance"])
def test_load_vision_refuses_pickled_code(ctx, tmp_path, payload, named):
    from jepa_wm.vision import load_vision

    path = tmp_path / "v.ckpt"
    torch.save({**torch.load(ctx.vision, weights_only=True), "extra": payload}, path)
    with pytest.raises(UserError, match=rf"v\.ckpt: refused: .*{named}"):
        load_vision(path)


def test_train_vision_never_loads_a_last_ckpt_carrying_pickled_code(ctx, tmp_path):
    out = tmp_path / "vision"
    argv = ["train-vision", "--config", SMOKE, "--data", str(ctx.store), "--out", str(out),
            *faults.SMALL_V]
    # in a folder of unknown identity: moved aside whole, never resumed from
    out.mkdir()
    faults.evil_checkpoint(out / "last.ckpt")
    before = (out / "last.ckpt").read_bytes()
    with faults.capture() as cap:
        assert cli.main(argv) == 0, cap.err
    (aside,) = tmp_path.glob("vision.replaced-*")
    assert (aside / "last.ckpt").read_bytes() == before
    # in a half-done folder of this very config (what a resume loads): refused, not run
    (out / "DONE.json").unlink()
    (out / "final.ckpt").unlink()
    faults.evil_checkpoint(out / "last.ckpt")
    before = (out / "last.ckpt").read_bytes()
    with faults.capture() as cap:
        code = cli.main(argv)
    assert code == 2 and re.search(r"last\.ckpt: refused: .*posix\.system", cap.err)
    assert (out / "last.ckpt").read_bytes() == before and not (out / "final.ckpt").exists()


class Touch:
    """Unpickling this creates a file: the proof that a load ran the file's code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_no_crafted_pickle_in_a_controller_folder_runs_on_resume(ctx_m, tmp_path):
    import pickle

    out, sentinel = tmp_path / "controller", tmp_path / "pwned"
    shutil.copytree(ctx_m.controller.parent, out)
    (out / "DONE.json").unlink()  # unfinished: the next run resumes this folder
    (out / "cmaes.pkl").write_bytes(pickle.dumps({"es": Touch(sentinel)}))  # the old format
    argv = ["train-controller", "--config", SMOKE, *ctx_m.parts(), "--out", str(out),
            "--controller_train.generations", "1", "--controller_train.popsize", "4",
            "--controller_train.rollouts", "1", "--controller_train.max_steps", "20"]
    with faults.capture() as cap:
        code = cli.main(argv)
    assert code == 0, cap.err  # resumed from cmaes.npz (arrays); the pickle is never read
    assert not sentinel.exists() and (out / "DONE.json").exists()
    assert "held work of another config" not in cap.out  # the same identity: resumed
    # a cmaes.npz whose array is a pickled object is refused, not unpickled
    (out / "DONE.json").unlink()
    with open(out / "cmaes.npz", "wb") as f:
        np.savez(f, told=np.array([Touch(sentinel)], dtype=object), asked=np.array(["x"]),
                 best_params=np.zeros(3), best_fitness=np.float64(0))
    with faults.capture() as cap:
        code = cli.main(argv)
    assert code == 2 and not sentinel.exists()
    assert re.search(r"cmaes\.npz: unreadable CMA-ES state", cap.err)
    assert len(cap.err.strip().splitlines()) == 1


def test_every_torch_load_in_the_package_is_weights_only():
    """Every ``torch.load(...)`` and ``ckpt_path=`` resume in jepa_wm passes
    ``weights_only=True`` (checked on the syntax tree, so it cannot be missed by layout)."""
    calls = []
    for path in (ROOT / "jepa_wm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "torch.load" or (name.endswith(".fit") and "ckpt_path" in keywords):
                flag = keywords.get("weights_only")
                ok = isinstance(flag, ast.Constant) and flag.value is True
                calls.append((f"{path.name}:{node.lineno}", ok))
    assert calls and all(ok for _, ok in calls), calls


# ------------------------------------------------------------------ a full disk

def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    """ENOSPC while a JSON file is replaced: the old file stays whole, no temp is left."""
    target = tmp_path / "metrics.json"
    write_json(target, {"old": 1})
    real_write_text = Path.write_text

    def full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        write_json(target, {"new": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_collect_after_a_full_disk_resumes_and_keeps_the_old_shards(ctx, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(ctx.store, store)
    old = faults.tree_digest(store)
    args = ["collect", "--episodes", "5", "--workers", "1", "--out", str(store)]
    with faults.capture() as cap, faults.disk_full_on_memmap():
        assert cli.main(args) == 2
    assert "no space left on device" in cap.err and faults.tree_digest(store) == old
    in_process(*args)  # space is back: the missing episode is collected
    new = faults.tree_digest(store)
    assert json.loads((store / "meta.json").read_text())["episodes"] == 5
    assert all(new[k] == v for k, v in old.items() if k.startswith("shard-"))


# ------------------------------------------------------------------ SIGKILL, then resume

def test_encode_killed_mid_write_then_rerun_gives_the_same_bytes(ctx, tmp_path):
    """The out folder holds a complete latent set of another V; encode with ctx's V is
    killed while z.npy is being written. The old set must not be usable any more (its
    metadata is gone, never mixed with new z), the rerun must finish, and its z.npy must be
    byte-identical to an uninterrupted encode's; no temporary file is left."""
    from jepa_wm.data.latents import LatentSet
    from jepa_wm.vision.encode import encode_store

    out = tmp_path / "latents"
    shutil.copytree(faults._other_latents(ctx), out)
    args = ["encode", "--vision", ctx.vision, "--data", ctx.store, "--out", out]
    kill_when(args, lambda pid: any(out.glob(".z.npy.*.tmp")),
              extra_delay=random.uniform(0.0, 0.1))
    assert not (out / "DONE.json").exists()
    with pytest.raises(UserError, match="not a latent set"):
        LatentSet(out)
    in_process(*args)
    encode_store(ctx.vision, ctx.store, tmp_path / "straight", show_progress=False)
    assert (out / "z.npy").read_bytes() == (tmp_path / "straight" / "z.npy").read_bytes()
    meta, straight = (json.loads((d / "meta.json").read_text()) for d in
                      (out, tmp_path / "straight"))
    assert meta["mean"] == straight["mean"] and meta["std"] == straight["std"]
    assert not list(out.glob("*.tmp")) and (out / "DONE.json").exists()


def assert_same_weights(a: Path, b: Path) -> None:
    """The ``state_dict``s of two checkpoints are equal, bit for bit."""
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


def assert_same_curve(resumed: Path, straight: Path, killed_at: int) -> None:
    """The resumed run's validation.json is the uninterrupted run's: every validation at
    the same steps with the same losses, bit for bit (one due at the very step the run
    resumed from may be missing: Lightning does not repeat it)."""
    a, b = ({e["step"]: {k: v for k, v in e.items() if k != "seconds"}
             for e in json.loads((d / "validation.json").read_text())}
            for d in (resumed, straight))
    assert len(b) >= 2 and all(len(e) > 1 and np.isfinite(list(e.values())).all()
                               for e in b.values())
    assert list(a) == sorted(a) and set(b) - set(a) <= {killed_at} and set(a) <= set(b)
    assert all(a[k] == b[k] for k in a), [(k, a[k], b[k]) for k in a if a[k] != b[k]]


def test_train_vision_killed_then_rerun_ends_bit_for_bit_like_an_uninterrupted_run(ctx,
                                                                                   tmp_path):
    """Killed at a random step, V resumes from last.ckpt and ends with the weights of a run
    never killed, bit for bit (step g's batch and noise depend on the seed and g alone; the
    4 epochs make the stream cross epochs)."""
    def args(out):
        return ["train-vision", "--config", SMOKE, "--config", ROOT / "configs/variants/vae.yaml",
                "--data", ctx.store, "--out", out, "--vision_train.max_steps", "-1",
                "--vision_train.max_epochs", "4", "--vision_train.max_frames", "300",
                "--vision_train.batch_size", "16", "--vision_train.threads", "1",
                "--vision_train.checkpoint_every", "3"]

    out = tmp_path / "vision"
    kill_when(args(out), lambda pid: (out / "last.ckpt").exists(),
              extra_delay=random.uniform(0.0, 0.5))
    assert not (out / "final.ckpt").exists() and not (out / "DONE.json").exists()
    killed_at = torch.load(out / "last.ckpt", weights_only=True)["global_step"]
    resume_in_process(*args(out))
    in_process(*args(tmp_path / "straight"))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "straight"))
    assert 0 < killed_at < a["steps"] == b["steps"]
    assert_same_weights(out / "final.ckpt", tmp_path / "straight" / "final.ckpt")
    assert a["vision/recon_mse"] == b["vision/recon_mse"]
    assert_same_curve(out, tmp_path / "straight", killed_at)


def _memory_args(ctx, out: Path) -> list:
    return ["train-memory", "--config", SMOKE, "--latents", ctx.latents, "--out", out,
            "--memory_train.max_epochs", "40", "--memory_train.max_steps", "-1",
            "--memory_train.threads", "1", "--memory_train.checkpoint_every", "5"]


def test_train_memory_killed_then_rerun_ends_bit_for_bit_like_an_uninterrupted_run(ctx_m,
                                                                                   tmp_path):
    """Killed at a random step, M resumes (weights, optimiser, the lanes' carried LSTM
    state, the stream's position and z noise) and ends bit for bit where a run never killed
    does."""
    from jepa_wm.memory import load_memory

    out = tmp_path / "memory"
    kill_when(_memory_args(ctx_m, out), lambda pid: (out / "last.ckpt").exists(),
              extra_delay=random.uniform(0.0, 1.0))
    assert not (out / "final.ckpt").exists() and not (out / "DONE.json").exists()
    killed_at = torch.load(out / "last.ckpt", weights_only=True)["global_step"]
    resume_in_process(*_memory_args(ctx_m, out))
    in_process(*_memory_args(ctx_m, tmp_path / "straight"))
    resumed, straight = (torch.load(d / "last.ckpt", weights_only=True) for d in
                         (out, tmp_path / "straight"))
    assert 0 < killed_at < resumed["global_step"] == straight["global_step"]
    load_memory(out / "final.ckpt")  # complete and loadable
    assert_same_weights(out / "final.ckpt", tmp_path / "straight" / "final.ckpt")
    m_resumed, m_straight = (json.loads((d / "metrics.json").read_text()) for d in
                             (out, tmp_path / "straight"))
    for key in ("final_gmm_nll", "val_gmm_nll", "final_done_loss"):
        assert np.isfinite(m_resumed[key]) and m_resumed[key] == m_straight[key], key
    assert_same_curve(out, tmp_path / "straight", killed_at)


def test_evaluate_killed_mid_episodes_then_rerun_gives_the_same_scores(ctx_m, tmp_path):
    def args(out):
        return ["evaluate", "--config", SMOKE, *ctx_m.parts(), "--controller",
                ctx_m.controller, "--out", out, "--evaluate.episodes", "8",
                "--evaluate.workers", "2"]

    out = tmp_path / "eval"
    # ready when the real-env worker processes run; a short delay and 8 episodes keep the
    # kill inside the episodes even on an idle machine (3 episodes could finish within 1 s)
    kill_when(args(out), has_children, extra_delay=random.uniform(0.0, 0.3))
    assert not (out / "results.json").exists() and not (out / "DONE.json").exists()
    rerun = jepa_wm(*args(out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    straight = jepa_wm(*args(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "straight"))
    for key in ("real_scores", "real_seeds", "real_mean", "dream_mean", "dream_std",
                "dream_real_gap"):
        assert a[key] == b[key], key
    assert len(a["real_scores"]) == 8


TINY = """\
# the smallest run of every stage (fault tests): 3 short VizDoom episodes, a few steps each
experiment: faults
env: VizdoomTakeCover-v1
max_episode_steps: 100
episodes: 3
workers: 1
vision_model:
  class_path: jepa_wm.vision.VAEModule
  init_args: {latent_dim: 8}
vision_train: {max_steps: 3, batch_size: 16, threads: 1}
memory_model:
  class_path: jepa_wm.memory.MDNRNNModule
  init_args: {hidden_size: 32, num_mixtures: 3, seq_len: 8}
memory_train: {max_steps: 5, batch_size: 8, threads: 1}
controller_train: {generations: 2, popsize: 4, rollouts: 2, max_steps: 30,
                   real_check_every: 0, workers: 1}
evaluate: {episodes: 1, dream_episodes: 4, workers: 1}
"""


def test_sweep_killed_mid_cell_resumes_without_redoing_finished_stages(tmp_path):
    exp = tmp_path / "tiny.yaml"
    exp.write_text(TINY)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"# fault test\nexperiment: {exp}\nvariants: "
                          f"[{ROOT / 'configs/variants/vae.yaml'}]\nseeds: [0]\n"
                          "baseline: vae\n")
    runs = tmp_path / "runs"
    cell = runs / "faults" / "vae" / "seed0"
    args = ["sweep", sweep_file, "--out", runs]
    # killed soon after a random stage is done: the kill lands in that stage or the next
    after = os.environ.get("FAULTS_KILL_AFTER") or random.choice(
        ["rollouts", "vision", "latents", "memory"])  # the env var replays one choice
    done = (lambda: any(runs.glob("faults/data/*/rollouts/DONE.json"))) if after == \
        "rollouts" else (lambda: (cell / after / "DONE.json").exists())
    kill_when(args, lambda pid: done(), extra_delay=random.uniform(0.0, 0.5))
    assert not (cell / "eval" / "DONE.json").exists(), f"finished before the kill ({after})"
    finished = {p: p.read_bytes() for p in runs.rglob("*")
                if p.is_file() and p.parent.name in ("rollouts", "vision", "latents", "memory")
                and (p.parent / "DONE.json").exists()}
    assert any(p.parent.name == after for p in finished), after
    rerun = jepa_wm(*args)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "skipped (done)" in rerun.stdout
    for p, data in finished.items():  # finished stages were skipped, not redone
        assert p.read_bytes() == data, (after, p)
    results = json.loads((cell / "eval" / "results.json").read_text())
    assert len(results["real_scores"]) == 1 and np.isfinite(results["dream_mean"])
    assert not (cell / "FAILED.json").exists()
    assert "| vae |" in (runs / "faults" / "report" / "results.md").read_text()
