"""VizDoom's engine process kept in its own folder and never left running.

VizDoom's engine is a separate process that writes ``./_vizdoom/`` and ``./_vizdoom.ini``
in the working folder it starts in, and it keeps running when the Python process that
drives it dies. Here every env starts its engine in a private folder under the cache (so
nothing lands in the user's folder and no two engines race on one), removes that folder
on ``close``, and ``reap_engines`` ends any engine an env worker left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import gymnasium as gym
import numpy as np

from jepa_wm.io import cache_dir

#: The engine's executable name (``/proc/<pid>/comm``).
ENGINE = "vizdoom"

# os.chdir is process-wide: one engine start at a time changes it, and only for that call.
_CWD_LOCK = threading.Lock()


def engine_children(pid: int | None = None) -> set[int]:
    """Pids of the VizDoom engines that are children of ``pid`` (default: this process);
    empty where ``/proc`` is missing."""
    pid = os.getpid() if pid is None else pid
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{kid}/comm").read_text().strip() == ENGINE:
                    found.add(int(kid))
    return found


def end_engines(pids: set[int]) -> None:
    """SIGKILL each engine and reap it when it is our child (no zombie left)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(pid, 0)


def _remove_stale(root: Path) -> None:
    """Remove the folders of engines whose process is gone (a killed run's leftovers)."""
    for folder in root.glob("engine-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


class VizdoomEngine(gym.Wrapper):
    """Start the wrapped VizDoom env's engine in a private folder of the cache (removed on
    ``close``), and make sure the engine has ended once ``close`` returns."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        root = cache_dir() / "vizdoom"
        root.mkdir(parents=True, exist_ok=True)
        if sys.platform.startswith("linux"):
            _remove_stale(root)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"engine-{os.getpid()}-", dir=root))
        (self.workdir / "_vizdoom").mkdir()
        self.engines: set[int] = set()
        self._started = False

    def reset(self, **kwargs):
        if self._started:
            return self.env.reset(**kwargs)
        before = engine_children()
        with _CWD_LOCK:  # the first reset starts the engine, in the folder it is in now
            here = os.getcwd()
            os.chdir(self.workdir)
            try:
                out = self.env.reset(**kwargs)
            finally:
                os.chdir(here)
        self._started = True
        self.engines = engine_children() - before
        return out

    def close(self):
        try:
            super().close()
        finally:
            end_engines({pid for pid in self.engines if Path(f"/proc/{pid}").exists()})
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def reap_engines():
    """Within this block, engines orphaned by a dead env worker become children of this
    process (Linux: PR_SET_CHILD_SUBREAPER), and every engine still a child of it at the
    end is killed and reaped: no VizDoom process outlives a collect or an evaluation."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    before = engine_children()
    try:
        yield
    finally:
        end_engines(engine_children() - before)
        if sys.platform.startswith("linux"):
            _remove_stale(cache_dir() / "vizdoom")


#: The game state ``GameState`` reads after every reset and step, in this order. Positions
#: are map units; ``fireball_*`` describe the nearest imp fireball (``DoomImpBall``) in view
#: (NaN when none is): its screen x (0 left edge .. 1 right edge of the frame) and its
#: distance to the player.
STATE_NAMES = ("player_x", "player_y", "health", "fireballs", "fireball_screen_x",
               "fireball_dist")
FIREBALL = "DoomImpBall"
#: A fireball nearer than this (map units) is hitting the player: on the step of a death
#: the nearest one is 24-36 away in the h30 stores (`benchmarks/results/hazard_states.md`).
TOUCHING = 40.0


class GameState(gym.Wrapper):
    """Put VizDoom's game state into ``info["state"]`` (float32, ``STATE_NAMES``) at every
    reset and step, for the probes of what a V's latent knows (``jepa_wm.probes``).

    It turns on the engine's labels buffer (which objects are on screen, and where) before
    the engine starts; the screen buffer, the game and its randomness are unchanged. After
    the episode's end the engine has no state: the values are NaN.
    """

    state_names = STATE_NAMES

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.game = env.unwrapped.game
        self.game.set_labels_buffer_enabled(True)
        self.width = self.game.get_screen_width()

    def _state(self) -> np.ndarray:
        import vizdoom as vzd

        out = np.full(len(STATE_NAMES), np.nan, np.float32)
        state = self.game.get_state()
        if state is None:
            return out
        var = self.game.get_game_variable
        x, y = var(vzd.GameVariable.POSITION_X), var(vzd.GameVariable.POSITION_Y)
        balls = [lab for lab in state.labels if lab.object_name == FIREBALL]
        out[:4] = x, y, var(vzd.GameVariable.HEALTH), len(balls)
        if balls:
            dist = [np.hypot(b.object_position_x - x, b.object_position_y - y) for b in balls]
            near = balls[int(np.argmin(dist))]
            out[4] = (near.x + near.width / 2) / self.width
            out[5] = min(dist)
        return out

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "state": self._state()}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "state": self._state()}
