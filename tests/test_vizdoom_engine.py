"""VizDoom's engine processes: kept out of the user's folder, never racing, never left
running, and a dead or hung env worker ends a collect with a one-line error, not a hang
(issue 12)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from jepa_wm.envs import make_env
from jepa_wm.envs.vector import make_vector_env
from jepa_wm.io import UserError

DOOM = "VizdoomTakeCover-v1"


def engines_in(cache: Path) -> list[int]:
    """Pids of the running VizDoom engines whose working folder is under ``cache``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() != "vizdoom":
                continue
            cwd = os.readlink(proc / "cwd")
            state = next(line for line in (proc / "status").read_text().splitlines()
                         if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if cwd.startswith(str(cache)) and "zombie" not in state:
            found.append(int(proc.name))
    return found


def collect_cmd(out: Path, episodes: int) -> list[str]:
    return [sys.executable, "-m", "jepa_wm.cli", "collect", "--env", DOOM, "--episodes",
            str(episodes), "--out", str(out), "--seed", "0", "--workers", "2"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("JEPA_WM_CACHE", str(root))
    return root


def test_collect_leaves_nothing_in_the_working_folder(tmp_path, cache):
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(collect_cmd(tmp_path / "store", 4), cwd=work, capture_output=True,
                          text=True, timeout=240, check=False,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr
    assert list(work.iterdir()) == []  # no _vizdoom/ nor _vizdoom.ini
    assert list((cache / "vizdoom").iterdir()) == []  # each engine's folder removed
    assert engines_in(cache) == []


@pytest.mark.faults
def test_a_killed_worker_ends_collect_with_one_line_error(tmp_path, cache):
    proc = subprocess.Popen(collect_cmd(tmp_path / "store", 200), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "WANDB_MODE": "disabled"})
    try:
        deadline = time.monotonic() + 120
        while len(engines_in(cache)) < 2:  # both workers' engines are running
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                   .read_text().split()]
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=150)  # a hang fails here
    finally:
        proc.kill()
    assert proc.returncode == 2
    assert re.fullmatch(r"error: collect: env workers: (step|reset) failed \(worker \d exited "
                        r"with code -9; EOFError\).*", err.splitlines()[-1])
    assert engines_in(cache) == []  # the orphaned engine of the killed worker too
    assert list((cache / "vizdoom").iterdir()) == []


@pytest.mark.faults
def test_a_hung_worker_times_out_and_is_killed(cache):
    envs = make_vector_env(partial(make_env, DOOM), 2, timeout=3.0)
    try:
        envs.reset(seed=[1, 2])
        envs.step(np.array([0, 1]))
        os.kill(envs.processes[1].pid, signal.SIGSTOP)  # alive, but never answers
        start = time.monotonic()
        with pytest.raises(UserError, match=r"step failed \(no answer in 3 s"):
            envs.step(np.array([0, 1]))
        assert time.monotonic() - start < 60
        assert not any(p.is_alive() for p in envs.processes)
        assert engines_in(cache) == []  # the killed workers' engines are killed too
    finally:
        for p in envs.processes:
            if p.is_alive():
                p.kill()
        envs.close(terminate=True)
