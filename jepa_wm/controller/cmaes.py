"""CMA-ES over the linear controller C (pycma), as in World Models: fitness = mean return
over R rollouts per candidate. In the dream, the whole population (P candidates x R
rollouts) is one batched rollout of M; in the real env, the P x R episodes are jobs over
gymnasium vector envs. Each generation also scores the distribution mean (on more
dreams); the mean with the best score is the controller kept in ``best.npz``.

State is saved every generation (``cmaes.npz``, ``best.npz``, ``history.json``, all
atomic), and a re-run resumes from it. ``cmaes.npz`` holds no pickle, nothing that can run
code when loaded: plain arrays of every generation's told fitnesses and a digest of its
asked candidates. Resuming rebuilds pycma's search from its seed and replays the generations
(ask, check the digest, tell), which puts pycma and numpy's global RNG, which pycma samples
from, exactly where the killed run left them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from jepa_wm.controller import ControllerFile, torch_threads
from jepa_wm.dream import Dream, dream_starts, rollout
from jepa_wm.io import UserError, atomic_path, read_json, write_json
from jepa_wm.nets.controller import ControllerPopulation, controller_input_dim, num_params

WHERE = ("dream", "real")
#: The distribution mean is scored on this many times the candidates' rollouts (dream).
CENTER_FACTOR = 4
STATE_FILE = "cmaes.npz"


def digest(solutions: np.ndarray) -> str:
    """A short fingerprint of one generation's asked candidates (to check a replay)."""
    return hashlib.sha256(np.ascontiguousarray(solutions, dtype=np.float64).tobytes()
                          ).hexdigest()[:16]


def check_config(cc) -> None:
    """Fail early, with the key named, on settings CMA-ES cannot run with."""
    if cc.where not in WHERE:
        raise UserError(f"controller_train.where: {cc.where!r}; accepted: dream, real")
    for key in ("generations", "popsize", "rollouts", "max_steps"):
        if getattr(cc, key) < 1:
            raise UserError(f"controller_train.{key}: {getattr(cc, key)}; accepted: >= 1")
    if cc.threads is not None and cc.threads < 1:
        raise UserError(f"controller_train.threads: {cc.threads}; accepted: >= 1, or null (all "
                        "of the process's threads)")
    if cc.popsize < 2:
        raise UserError(f"controller_train.popsize: {cc.popsize}; accepted: >= 2")
    if not cc.sigma0 > 0:
        raise UserError(f"controller_train.sigma0: {cc.sigma0}; accepted: a number > 0")
    if not cc.tau > 0:
        raise UserError(f"controller_train.tau: {cc.tau}; accepted: a number > 0")


def make_dream(cc, memory, latents, store, tau: float | None = None,
               observer=None) -> Dream:
    """The dream C trains in (``controller_train`` settings; ``tau`` overrides its τ); with
    an ``observer`` M, C's memory is that M and ``memory`` is the world (``Dream``)."""
    starts, sigma = dream_starts(latents, memory, cc.start, store)
    return Dream(memory, starts, tau=cc.tau if tau is None else tau, done=cc.done,
                 reward=cc.reward, max_steps=cc.max_steps, start_sigma=sigma,
                 done_threshold=cc.done_threshold, precision=cc.precision, observer=observer,
                 kernel=cc.kernel)


def generation_seed(seed: int, generation: int, salt: int = 0) -> int:
    """Seed of one generation's dreams: a resumed run replays the same noise."""
    return int(np.random.SeedSequence([seed, generation, salt]).generate_state(1)[0])


def dream_fitness(dream: Dream | Sequence[Dream], population: ControllerPopulation,
                  rollouts: np.ndarray, seed: int, include_cell: bool
                  ) -> tuple[np.ndarray, int]:
    """Mean dream return of each of the P candidates over ``rollouts[p]`` dreams each, all
    of them in one batch per world. Several dreams (worlds, e.g. the M of every round of
    iterative training) share each candidate's rollouts out evenly (the first worlds take
    the remainder), each world its own noise. Returns ``(fitness (P,), dream steps)``."""
    worlds = [dream] if isinstance(dream, Dream) else list(dream)
    counts = np.asarray(rollouts, dtype=np.int64)
    sums, steps = torch.zeros(len(counts)), 0
    for w, world in enumerate(worlds):
        share = counts // len(worlds) + (w < counts % len(worlds))
        owner = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(share))
        # one world: the seed as it always was, so earlier runs replay the same dreams
        generator = torch.Generator().manual_seed(seed if w == 0 else seed + 7919 * w)
        out = rollout(world, lambda x, index, owner=owner: population(x, owner[index])[1],
                      len(owner), generator, include_cell)
        sums.index_add_(0, owner, out["returns"])
        steps += out["steps"]
    return (sums / torch.as_tensor(counts)).numpy(), steps


class Trainer:
    """One CMA-ES run writing into ``out``; ``run()`` resumes from ``cmaes.npz`` if there.

    Args:
        cc: The ``controller_train`` section.
        seed: The run's seed (CMA-ES's and the dreams' noise).
        memory: M (``MDNRNNModule``).
        dream: The dream (``where: dream``), or several (worlds sharing each candidate's
            rollouts, ``dream_fitness``); None for ``where: real``.
        real: ``callable(params (n,), episodes, seed) -> returns`` playing the real env
            (needs V); None skips the real checks and ``where: real``.
        out: Output folder.
        run: A wandb run (or None).
    """

    def __init__(self, cc, seed: int, memory, dream: Dream | Sequence[Dream] | None, real,
                 out: Path, run=None):
        self.cc, self.seed = cc, int(seed)
        check_config(self.cc)
        self.memory, self.dream, self.real, self.out = memory, dream, real, out
        self.wandb = run
        self.input_dim = controller_input_dim(memory.latent_dim, memory.net.hidden_size,
                                              self.cc.include_cell)
        self.n_params = num_params(self.input_dim, memory.action)
        if self.cc.where == "real" and real is None:
            raise UserError("controller_train.where real: needs the vision checkpoint")

    # -- state
    def _new_state(self) -> dict:
        import cma

        es = cma.CMAEvolutionStrategy(np.zeros(self.n_params), self.cc.sigma0, {
            "popsize": self.cc.popsize, "seed": self.seed + 1, "verbose": -9})
        return {"es": es, "generation": 0, "best_fitness": -np.inf,
                "best_params": np.zeros(self.n_params), "history": [], "told": [],
                "asked": []}

    def _load_state(self) -> dict:
        """A fresh search, or the saved one replayed generation by generation."""
        state = self._new_state()
        path = self.out / STATE_FILE
        if not path.exists():
            return state
        try:
            with np.load(path, allow_pickle=False) as f:  # arrays only: nothing can run
                told, asked = f["told"], f["asked"]
                best_params, best_fitness = f["best_params"], float(f["best_fitness"])
        except Exception as e:
            raise UserError(f"{path}: unreadable CMA-ES state ({type(e).__name__}); delete "
                            "it to restart training") from None
        if told.ndim != 2 or told.shape[1] != self.cc.popsize or len(best_params) != \
                self.n_params or len(asked) != len(told):
            raise UserError(f"{path}: CMA-ES state for {len(best_params)} parameters and "
                            f"popsize {told.shape[-1]}; this run has {self.n_params} and "
                            f"{self.cc.popsize}; use a fresh --out")
        es = state["es"]
        for generation, (fitness, expected) in enumerate(zip(told, asked)):
            solutions = np.asarray(es.ask())
            if digest(solutions) != str(expected):
                raise UserError(f"{path}: replaying generation {generation + 1} asked other "
                                "candidates than the saved run (another pycma or numpy?); "
                                "delete it to restart training")
            es.tell(list(solutions), list(fitness))
        state.update(generation=len(told), best_fitness=best_fitness,
                     best_params=best_params.astype(np.float64),
                     history=load_history(self.out)[:len(told)],
                     told=[np.asarray(t) for t in told], asked=[str(a) for a in asked])
        return state

    def _save(self, state: dict) -> None:
        """History and ``best.npz`` first, the search state last: a kill in between redoes
        that generation on resume (the state file is what commits it)."""
        write_json(self.out / "history.json", state["history"])
        ControllerFile(state["best_params"].astype(np.float32), self.memory.latent_dim,
                       self.memory.net.hidden_size, self.cc.include_cell, self.memory.action,
                       float(state["best_fitness"])).save(self.out / "best.npz")
        with atomic_path(self.out / STATE_FILE) as tmp, open(tmp, "wb") as f:
            np.savez(f, told=np.asarray(state["told"], dtype=np.float64).reshape(
                         -1, self.cc.popsize), asked=np.asarray(state["asked"], dtype="U16"),
                     best_params=np.asarray(state["best_params"], dtype=np.float64),
                     best_fitness=np.float64(state["best_fitness"]))

    # -- one generation
    def _fitness(self, candidates: np.ndarray, generation: int) -> tuple[np.ndarray, int]:
        """Fitness of the P sampled candidates and, last, of the distribution mean (scored
        on ``CENTER_FACTOR`` times more dreams: it is the controller that gets saved)."""
        seed = generation_seed(self.seed, generation)
        R = self.cc.rollouts
        if self.cc.where == "dream":
            population = ControllerPopulation(torch.as_tensor(candidates, dtype=torch.float32),
                                              self.input_dim, self.memory.action,
                                              kernel=self.cc.kernel)
            counts = np.r_[np.full(len(candidates) - 1, R), CENTER_FACTOR * R]
            return dream_fitness(self.dream, population, counts, seed, self.cc.include_cell)
        out = self.real(candidates, R, seed)  # real episodes are dear: R for the mean too
        return out["returns"].reshape(len(candidates), -1).mean(1), out["steps"]

    def _real_check(self, state: dict) -> dict | None:
        """The kept controller's mean real return and M's hazard summed along those
        episodes (mean; against the share that died): None when no check is due."""
        every, gen = self.cc.real_check_every, state["generation"]
        if self.real is None or every <= 0 or (gen % every and gen != self.cc.generations):
            return None
        out = self.real(state["best_params"][None], self.cc.real_check_episodes,
                        generation_seed(self.seed, gen, salt=1))
        return {"real_mean": float(np.mean(out["returns"])),
                "real_death_sum": float(np.mean(out["hazard_sums"])),
                "real_died": float(np.mean(out["died"]))}

    def step(self, state: dict) -> dict:
        """Ask, evaluate, tell; update the best; return this generation's record."""
        es = state["es"]
        start = time.time()
        solutions = np.asarray(es.ask())
        center = np.asarray(es.mean).copy()
        scores, steps = self._fitness(np.vstack([solutions, center]), state["generation"])
        fitness, center_fitness = scores[:-1], float(scores[-1])
        es.tell(list(solutions), list(-fitness))  # pycma minimises
        state["told"].append(-np.asarray(fitness, dtype=np.float64))
        state["asked"].append(digest(solutions))
        seconds = time.time() - start
        # keep the mean with the best score, as Ha's estool: a sampled candidate's best
        # score over a few noisy rollouts is biased upwards (the winner's curse)
        if center_fitness > state["best_fitness"]:
            state["best_fitness"], state["best_params"] = center_fitness, center
        state["generation"] += 1
        record = {"generation": state["generation"], "best": float(fitness.max()),
                  "center": center_fitness,
                  "mean": float(fitness.mean()), "worst": float(fitness.min()),
                  "best_so_far": state["best_fitness"], "sigma": float(es.sigma),
                  "steps": steps, "seconds": seconds,
                  f"{self.cc.where}_steps_per_s": steps / max(seconds, 1e-9)}
        record.update(self._real_check(state) or {})
        state["history"].append(record)
        return record

    def run(self) -> dict:
        """All generations (resuming); returns the final state."""
        from rich.progress import Progress

        state = self._load_state()
        with Progress(transient=True) as bar, torch_threads(self.cc.threads):
            task = bar.add_task(f"CMA-ES ({self.cc.where})", total=self.cc.generations,
                                completed=state["generation"])
            while state["generation"] < self.cc.generations:
                record = self.step(state)
                self._save(state)
                self._log(record)
                bar.update(task, completed=state["generation"],
                           description=f"CMA-ES ({self.cc.where}) best {record['best']:.1f}")
        return state

    def _log(self, record: dict) -> None:
        if self.wandb is None:
            return
        where = self.cc.where
        log = {f"{where}/return_best": record["best"], f"{where}/return_mean": record["mean"],
               f"{where}/return_worst": record["worst"], "cmaes/sigma": record["sigma"],
               f"{where}/steps_per_s": record[f"{where}_steps_per_s"],
               f"{where}/return_center": record["center"],
               "cmaes/best_so_far": record["best_so_far"]}
        if "real_mean" in record:
            log["real/return_mean"] = record["real_mean"]
            log["real/death_sum_per_episode"] = record["real_death_sum"]
        self.wandb.log(log, step=record["generation"])


def load_history(out: Path) -> list:
    """``history.json`` of a (possibly unfinished) run, or []."""
    path = Path(out) / "history.json"
    return read_json(path) if path.exists() else []
