"""Dream fidelity figures against cases whose answer is known: a constant hazard p dies
after 1/p steps on average, a hazard summed over episodes, the data policy's holds, the
open-loop error against a hand-rolled one; and the ``fidelity`` stage through the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from jepa_wm import fidelity
from jepa_wm.data import RolloutStore
from jepa_wm.dream import Dream
from jepa_wm.envs import ActionSpace
from jepa_wm.envs.vizdoom import TOUCHING
from jepa_wm.memory import MDNRNNModule, save_memory
from tests.conftest import write_test_latents

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
DISCRETE = ActionSpace(gym.spaces.Discrete(3)).to_dict()


def constant_hazard_memory(p: float, latent_dim: int = 4, **kw) -> MDNRNNModule:
    """An M whose done head ignores its input: the hazard is p at every step."""
    torch.manual_seed(0)
    m = MDNRNNModule(latent_dim=latent_dim, action=DISCRETE, hidden_size=8, num_mixtures=2,
                     **kw)
    with torch.no_grad():
        m.net.head.weight[-1].zero_()
        m.net.head.bias[-1] = math.log(p / (1 - p)) + math.log(m.hparams.done_pos_weight)
    return m.eval()


@pytest.mark.parametrize("weight", [1.0, 10.0])
def test_constant_hazard_survives_one_over_p_in_the_dream(weight):
    """Geometric deaths: mean survival 1/p; a class-weighted head does not change it."""
    p = 0.02
    memory = constant_hazard_memory(p, done_pos_weight=weight)
    dream = Dream(memory, torch.zeros(3, 4), tau=1.15, done="sample", reward="survival",
                  max_steps=2100)
    real = np.full(50, 1 / p)
    out = fidelity.policy_survival(dream, real, max_hold=10, n=4000, seed=0)
    assert out["policy_survival_dream"] == pytest.approx(1 / p, rel=0.05)
    assert out["policy_survival_ratio"] == pytest.approx(1.0, rel=0.05)
    assert out["policy_survival_dream_median"] == pytest.approx(math.log(2) / p, rel=0.1)


def test_hold_survival_sets_each_held_action_against_its_real_episodes():
    """A dream that kills at p per step whatever is held, against a game where holding
    action 0 dies twice as fast and holding 2 twice as slow: the ratios are 2 and 0.5, and
    the largest is action 0's."""
    p = 0.02
    dream = Dream(constant_hazard_memory(p), torch.zeros(3, 4), tau=1.15, done="sample",
                  reward="survival", max_steps=2100)
    real = {0: np.full(8, 0.5 / p), 1: np.full(8, 1 / p), 2: np.full(8, 2 / p)}
    out = fidelity.hold_survival(dream, real, n=4000, seed=0)
    assert out["hold_survival_real"] == {"0": 25.0, "1": 50.0, "2": 100.0}
    for a, ratio in {"0": 2.0, "1": 1.0, "2": 0.5}.items():
        assert out["hold_survival_dream"][a] == pytest.approx(1 / p, rel=0.05)
        assert out["hold_survival_ratio"][a] == pytest.approx(ratio, rel=0.05)
    assert out["hold_survival_action_max"] == 0 and out["hold_real_episodes"] == 8
    assert out["hold_survival_ratio_max"] == out["hold_survival_ratio"]["0"]


def test_held_random_policy_holds_each_action_one_to_max_hold_steps():
    box = {"type": "box", "low": [-1.0, 0.0], "high": [1.0, 2.0]}
    n, steps, max_hold = 64, 400, 10
    policy = fidelity.held_random_policy(box, max_hold, n, torch.Generator().manual_seed(0))
    index = torch.arange(n)
    actions = torch.stack([policy(None, index) for _ in range(steps)], 1)  # (n, steps, 2)
    assert (actions[..., 0] >= -1).all() and (actions[..., 1] <= 2).all()
    changes = (actions[:, 1:] != actions[:, :-1]).any(-1)  # a continuous draw never repeats
    runs = []
    for row in changes:
        cuts = torch.nonzero(row).flatten().tolist()
        runs += np.diff(cuts).tolist()  # whole holds between two changes
    assert min(runs) >= 1 and max(runs) == max_hold
    assert np.mean(runs) == pytest.approx((max_hold + 1) / 2, rel=0.05)


def test_death_calibration_sums_the_hazard_per_episode():
    lengths = torch.tensor([4, 2])
    valid = torch.arange(4)[None] < lengths[:, None]
    done = torch.tensor([[0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.float32)
    hazard = torch.tensor([[0.1, 0.1, 0.2, 0.6], [0.5, 0.5, 0.9, 0.9]]) * valid
    out = fidelity.death_calibration(hazard, {"valid": valid, "done": done, "lengths": lengths})
    assert out["death_sum_per_episode"] == pytest.approx((1.0 + 1.0) / 2)
    assert out["deaths_per_episode"] == 1.0
    p = np.array([0.1, 0.1, 0.2, 0.6, 0.5, 0.5])
    y = np.array([0, 0, 0, 1, 0, 1])
    assert out["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert out["hazard_last2"] == pytest.approx(np.mean([0.2, 0.6, 0.5, 0.5]))
    assert sum(r["steps"] for r in out["reliability"]) == 6


def test_open_loop_error_at_horizon_one_is_the_teacher_forced_prediction(doom_store,
                                                                          tmp_path):
    store = RolloutStore(doom_store)
    latents = write_test_latents(store, tmp_path / "z", sigma=False)
    memory = constant_hazard_memory(0.01)
    episodes = [0, 2]
    batch = fidelity.episode_batch(memory, latents, store, episodes)
    out = fidelity.open_loop_error(memory, batch, horizons=(1, 10))
    # by hand: from each start t0 (every 50 steps), the mixture mean after step t0
    errs, copies = [], []
    for e, L in enumerate(batch["lengths"].tolist()):
        with torch.no_grad():
            pred, _ = memory.net(batch["z"][e:e + 1, :L], batch["a"][e:e + 1, :L])
        mean = fidelity.mixture_mean(pred)[0]
        for t0 in range(0, L - 1, fidelity.OPEN_LOOP_EVERY):
            target = batch["z_mean"][e, t0 + 1]
            errs.append(float(((mean[t0] - target) ** 2).mean()))
            copies.append(float(((batch["z_mean"][e, t0] - target) ** 2).mean()))
    assert out["open_loop_starts_1"] == len(errs)
    assert out["open_loop_mse_1"] == pytest.approx(np.mean(errs), rel=1e-4)
    assert out["copy_mse_1"] == pytest.approx(np.mean(copies), rel=1e-4)
    assert out["open_loop_starts_10"] <= out["open_loop_starts_1"]


def test_fidelity_stage_writes_the_figures_from_held_out_episodes(doom_store, tmp_path):
    """The real CLI on a real store: fidelity.json holds the issue's keys, measured on the
    episodes M's checkpoint holds out; a second call does nothing."""
    store = RolloutStore(doom_store)
    write_test_latents(store, tmp_path / "z", sigma=True)
    memory = constant_hazard_memory(0.005)
    save_memory(memory, tmp_path / "m" / "final.ckpt", val_episodes=[1, 3])
    out = tmp_path / "fidelity"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "jepa_wm.cli", "fidelity", "--config",
            "configs/experiments/smoke.yaml", "--memory", str(tmp_path / "m" / "final.ckpt"),
            "--latents", str(tmp_path / "z"), "--out", str(out),
            "--controller_train.done", "sample", "--evaluate.fidelity_dreams", "256",
            "--evaluate.fidelity_hold_episodes", "2"]
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads((out / "fidelity.json").read_text())
    # each of the 3 actions held for 2 real episodes (the same seeds as the library call)
    # against the dream, where this M kills at 0.005 per step whatever is held
    real_hold = fidelity.real_hold_lengths("VizdoomTakeCover-v1", 64, 1, 2100, 2, 0)
    assert sorted(figures["hold_survival_real"]) == ["0", "1", "2"]
    for a, lengths in real_hold.items():
        assert figures["hold_survival_real"][str(a)] == pytest.approx(lengths.mean())
        assert figures["hold_survival_dream"][str(a)] == pytest.approx(1 / 0.005, rel=0.2)
        assert figures["hold_survival_ratio"][str(a)] == pytest.approx(
            figures["hold_survival_dream"][str(a)] / lengths.mean())
    assert figures["hold_survival_ratio_max"] == max(figures["hold_survival_ratio"].values())
    assert figures["hold_real_episodes"] == 2 and "holding action" in run.stdout
    real = store.episode_lengths[[1, 3]]
    assert figures["policy_survival_real"] == pytest.approx(real.mean())
    assert figures["policy_survival_dream"] == pytest.approx(1 / 0.005, rel=0.15)
    assert figures["policy_survival_ratio"] == pytest.approx(
        figures["policy_survival_dream"] / real.mean())
    assert figures["death_sum_per_episode"] == pytest.approx(0.005 * real.mean(), rel=1e-3)
    assert figures["episodes"] == 2 and figures["deaths_per_episode"] == 1.0
    # where a fireball touches the player (the store's recorded distance): this M's 0.005
    # against the game's deaths on those steps
    rows = np.concatenate([np.arange(store.episode_starts[e],
                                     store.episode_starts[e] + store.episode_lengths[e])
                           for e in (1, 3)])
    dist = store.get("state", rows)[:, list(store.state_names).index("fireball_dist")]
    near = np.nan_to_num(dist, nan=np.inf) < TOUCHING
    assert near.any()
    assert figures["touching_steps"] == pytest.approx(near.mean())
    assert figures["touching_hazard"] == pytest.approx(0.005, rel=1e-4)
    assert figures["touching_deaths"] == pytest.approx(store.terminated(rows)[near].mean())
    # a hazard the same everywhere puts the touching steps' share of the steps on them
    assert figures["touching_share"] == pytest.approx(near.mean(), rel=1e-4)
    dead = store.terminated(rows)
    assert figures["touching_death_share"] == pytest.approx(dead[near].sum() / dead.sum())
    assert "death sum" in run.stdout
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600, check=False)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_hazard_states_splits_m_and_the_game_deaths_by_what_the_game_recorded(doom_store,
                                                                             tmp_path):
    """benchmarks/hazard_states.py through its CLI on a run folder over the real store: an M
    whose hazard is 0.005 everywhere reads 5 per 1,000 steps in every bin of both splits,
    and the game's deaths per bin are the store's terminations where its recorded state
    falls in that bin."""
    store = RolloutStore(doom_store)
    run = tmp_path / "exp" / "vae" / "seed0"
    write_test_latents(store, run / "latents", sigma=True)
    save_memory(constant_hazard_memory(0.005), run / "memory" / "final.ckpt",
                val_episodes=[0, 1, 2, 3])
    out = tmp_path / "hazard_states.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/hazard_states.py"), str(run),
                           "--out", str(out)], cwd=ROOT / "benchmarks", capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import hazard_states

    state = store.get("state", np.arange(store.num_frames))
    names = list(store.state_names)
    dist, health = state[:, names.index("fireball_dist")], state[:, names.index("health")]
    died = store.terminated(np.arange(store.num_frames)).astype(bool)
    text = out.read_text()
    assert "exp/vae/seed0** (4 held-out episodes" in text
    for split, name, sel in hazard_states.bins({"dist": dist, "health": health}):
        if not sel.any():
            continue
        game = 1e3 * died[sel].mean()
        row = f"| {split} | {name} | {sel.mean():.3f} | {game:.2f} | 5.00 |"
        assert row in text, row
    assert "| exp/vae/seed0 | " in text  # the one-line summary
    assert "M's death AP |" in text
    # M's death AP: a hazard that marks the deadly steps ranks them first (1), one that
    # marks the steps before them does not
    death = np.array([0, 0, 1, 0, 0, 0, 1, 0], float)
    assert hazard_states.death_ap({"death": death, "hazard": 0.01 + death}) == 1.0
    early = {"death": death, "hazard": 0.01 + np.roll(death, -1)}
    assert hazard_states.death_ap(early) < 0.5
