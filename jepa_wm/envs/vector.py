"""Vector envs across cores that end with a one-line error, never a hang, when a worker
dies or stops answering, and leave no VizDoom engine behind."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.async_vector_env import AsyncState

from jepa_wm.envs.vizdoom import end_engines, engine_children
from jepa_wm.io import UserError

#: Seconds an env worker may take to answer one step or reset (a VizDoom engine starts in
#: about a second; a step takes milliseconds) before the run stops with an error.
ENV_TIMEOUT = 120.0


class WatchedVectorEnv(AsyncVectorEnv):
    """``AsyncVectorEnv`` whose every step and reset waits at most ``timeout`` seconds; a
    worker that died or hangs ends the call with a ``UserError`` naming it and its exit
    code, and every worker is terminated."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], timeout: float = ENV_TIMEOUT,
                 **kwargs):
        super().__init__(env_fns, **kwargs)
        self.timeout = timeout

    def reset(self, *, seed=None, options=None):
        self.reset_async(seed=seed, options=options)
        return self._wait(self.reset_wait, "reset")

    def step(self, actions):
        self.step_async(actions)
        return self._wait(self.step_wait, "step")

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        # a stopped or hung worker ignores SIGTERM and would hang gymnasium's join(): kill it
        if terminate:
            for process in self.processes:
                if process.is_alive():
                    engines = engine_children(process.pid)  # they outlive a killed worker
                    process.kill()
                    end_engines(engines)
        super().close_extras(timeout=self.timeout if timeout is None else timeout,
                             terminate=terminate)

    def _wait(self, wait, what: str):
        try:
            return wait(timeout=self.timeout)
        except (multiprocessing.TimeoutError, EOFError, BrokenPipeError,
                ConnectionResetError) as e:
            codes = [p.exitcode for p in self.processes]
            dead = [f"worker {i} exited with code {c}" for i, c in enumerate(codes)
                    if c is not None]
            why = "; ".join(dead) or f"no answer in {self.timeout:.0f} s"
            self._state = AsyncState.DEFAULT  # else close() waits on the dead pipe again
            self.close(terminate=True)
            raise UserError(f"env workers: {what} failed ({why}; {type(e).__name__}); "
                            "the run stops here and resumes from its last saved part") from None


def make_vector_env(env_fn: Callable[[], gym.Env], n: int,
                    timeout: float = ENV_TIMEOUT) -> gym.vector.VectorEnv:
    """``n`` copies of ``env_fn()`` with auto-reset off (each env is reset by hand with its
    own seed): one in this process, or ``n`` worker processes watched for death."""
    mode = AutoresetMode.DISABLED
    if n == 1:
        return SyncVectorEnv([env_fn], autoreset_mode=mode)
    return WatchedVectorEnv([env_fn] * n, timeout=timeout, autoreset_mode=mode)
