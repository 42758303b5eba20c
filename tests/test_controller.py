"""C: action mapping, the batched population, and the real pipeline end to end on a small
real VizDoom store: train-memory, train-controller (CMA-ES improves the dream fitness;
resume after SIGKILL replays exactly), evaluate (results.json from real episodes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from jepa_wm.controller import ControllerFile
from jepa_wm.envs import ActionSpace, EnvSettings
from jepa_wm.io import UserError
from jepa_wm.nets.controller import ControllerPopulation, LinearController, num_params

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "experiments" / "smoke.yaml")
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- unit


def test_discrete_mapping_is_argmax_and_one_hot():
    env_a, vec = ActionSpace(gym.spaces.Discrete(3)).controller_action(
        torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]]))
    assert env_a.tolist() == [1, 0]
    assert vec.tolist() == [[0, 1, 0], [1, 0, 0]]


def test_box_mapping_is_tanh_scaled_to_bounds():
    box = ActionSpace(gym.spaces.Box(np.array([-1.0, 0.0], np.float32),
                                     np.array([1.0, 4.0], np.float32)))
    env_a, vec = box.controller_action(torch.tensor([[0.0, 0.0], [50.0, -50.0], [-50.0, 50.0]]))
    torch.testing.assert_close(env_a, torch.tensor([[0.0, 2.0], [1.0, 0.0], [-1.0, 4.0]]))
    assert torch.equal(env_a, vec)


@pytest.mark.parametrize("kernel", ["eager", "fused"])
@pytest.mark.parametrize("action", [gym.spaces.Discrete(3),
                                    gym.spaces.Box(-1.0, 1.0, (2,), np.float32)])
def test_population_rows_use_their_owners_parameters(action, kernel):
    P, dim = 5, 37  # 37: the fused kernel's vector loop has a remainder
    params = torch.randn(P, num_params(dim, action))
    x, owner = torch.randn(12, dim), torch.randint(0, P, (12,))
    batched = ControllerPopulation(params, dim, action, kernel=kernel)(x, owner)[1]
    one_by_one = torch.stack([LinearController(dim, action, params[o])(x[i:i + 1])[1][0]
                              for i, o in enumerate(owner.tolist())])
    torch.testing.assert_close(batched, one_by_one)


def test_death_rates_split_the_dream_real_gap():
    """Per step: deaths in the game, M's hazard on the game's steps, deaths in the dream
    (a dream that ran to the step limit did not die)."""
    from jepa_wm.controller.evaluate import death_rates

    played = {"lengths": np.array([300, 700]), "died": np.array([True, False]),
              "hazard_sums": np.array([0.5, 0.3])}
    dreamed = {"lengths": np.array([100, 2100, 800, 2100])}
    rates = death_rates(played, dreamed, max_steps=2100)
    assert rates == pytest.approx({"c_death_rate_game": 1 / 1000,
                                   "c_hazard_rate_game": 0.8 / 1000,
                                   "c_death_rate_dream": 2 / 5100})


def test_controller_file_round_trip_and_bad_file(tmp_path):
    action = ActionSpace(gym.spaces.Discrete(3))
    c = ControllerFile(np.arange(num_params(8 + 4, action), dtype=np.float32), 8, 4, False,
                       action, 12.5)
    c.save(tmp_path / "best.npz")
    back = ControllerFile.load(tmp_path / "best.npz")
    assert np.array_equal(back.params, c.params) and back.action == action
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.npz"):
        ControllerFile.load(tmp_path / "junk.npz")


# ----------------------------------------------------------------------------- pipeline


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "jepa_wm.cli", *args], env=ENV, text=True,
                          capture_output=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"jepa-wm {args[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def run_dir(doom_store, tmp_path_factory) -> Path:
    """A run folder with a frozen random V, its latents (``encode``) and M trained by the
    CLI (``train-memory``)."""
    from jepa_wm.vision import RandomModule
    from jepa_wm.vision.train import save_final

    run = tmp_path_factory.mktemp("run")
    (run / "vision").mkdir()
    save_final(RandomModule(latent_dim=16), run / "vision" / "final.ckpt")
    cli("encode", "--config", SMOKE, "--vision", str(run / "vision" / "final.ckpt"),
        "--data", str(doom_store), "--out", str(run / "latents"))
    cli("train-memory", "--config", SMOKE, "--latents", str(run / "latents"),
        "--out", str(run / "memory"))
    return run


def parts(run: Path) -> list[str]:
    return ["--config", SMOKE, "--vision", str(run / "vision" / "final.ckpt"), "--memory",
            str(run / "memory" / "final.ckpt"), "--latents", str(run / "latents")]


def test_train_memory_writes_a_loadable_m(run_dir):
    from jepa_wm.memory import load_memory

    metrics = json.loads((run_dir / "memory" / "metrics.json").read_text())
    assert np.isfinite([metrics[f"final_{k}"] for k in ("gmm_nll", "reward_loss",
                                                        "done_loss")]).all()
    m = load_memory(run_dir / "memory" / "final.ckpt")
    assert m.latent_dim == 16 and m.action == {"type": "discrete", "n": 3}
    assert (run_dir / "memory" / "DONE.json").exists()
    again = cli("train-memory", "--config", SMOKE, "--latents", str(run_dir / "latents"),
                "--out", str(run_dir / "memory"))
    assert "nothing to do" in again.stdout


def test_untrained_m_variant_is_saved_untrained(run_dir):
    out = run_dir / "memory_untrained"
    cli("train-memory", "--config", SMOKE, "--config",
        str(ROOT / "configs" / "variants" / "untrained_m.yaml"), "--latents",
        str(run_dir / "latents"), "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["untrained"] and not (out / "last.ckpt").exists()
    trained = json.loads((run_dir / "memory" / "metrics.json").read_text())
    assert trained["final_gmm_nll"] < metrics["final_gmm_nll"]


def test_cmaes_improves_dream_fitness_then_evaluate_writes_results(run_dir):
    cli("train-controller", *parts(run_dir), "--out", str(run_dir / "controller"))
    history = json.loads((run_dir / "controller" / "history.json").read_text())
    assert [h["generation"] for h in history] == [1, 2, 3]
    assert history[-1]["mean"] > history[0]["mean"], history
    assert (run_dir / "controller" / "DONE.json").exists()

    proc = cli("evaluate", *parts(run_dir), "--controller",
               str(run_dir / "controller" / "best.npz"), "--out", str(run_dir / "eval"))
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert len(results["real_scores"]) == 2 and min(results["real_scores"]) > 0
    assert results["real_mean"] == pytest.approx(np.mean(results["real_scores"]))
    assert results["dream_real_gap"] == pytest.approx(results["dream_mean"] -
                                                      results["real_mean"])
    assert results["tau"] == 1.15 and results["seed"] == 0
    assert {"train-memory", "train-controller", "evaluate"} <= set(results["wall_time"])
    assert "real" in proc.stdout and "dream" in proc.stdout
    # M's hazard along C's own real episodes, against the share of them that died
    sums = results["real_death_sums"]
    assert len(sums) == 2 and min(sums) > 0
    assert results["c_death_sum_per_episode"] == pytest.approx(np.mean(sums))
    assert results["c_deaths_per_episode"] in (0.0, 0.5, 1.0)
    assert 0 < results["c_hazard_rate_game"] and 0 <= results["c_death_rate_dream"] < 1
    assert "C's deaths per 1,000 steps" in proc.stdout


def test_evaluate_tau_table_trains_c_at_each_other_tau(run_dir):
    """The paper's virtual-vs-actual table: a C per temperature, scored in its dream and in
    the game; at the run's own tau it is the run's C (not trained twice)."""
    if not (run_dir / "controller" / "DONE.json").exists():
        cli("train-controller", *parts(run_dir), "--out", str(run_dir / "controller"))
    out = run_dir / "eval_taus"
    proc = cli("evaluate", *parts(run_dir), "--controller",
               str(run_dir / "controller" / "best.npz"), "--out", str(out),
               "--evaluate.taus", "[0.5, 1.15]")
    assert proc.returncode == 0, proc.stderr
    table = json.loads((out / "results.json").read_text())["tau_table"]
    assert [row["tau"] for row in table] == [0.5, 1.15]
    assert all(row["real_mean"] > 0 and row["dream_mean"] > 0 for row in table)
    for row in table:  # the episodes behind the mean, for the table's CI
        assert row["real_mean"] == pytest.approx(np.mean(row["real_scores"]))
    assert (out / "tau-0.5" / "best.npz").exists() and not (out / "tau-1.15").exists()
    assert len(json.loads((out / "tau-0.5" / "history.json").read_text())) == 3


def test_finished_train_controller_still_refuses_another_v(run_dir, tmp_path):
    from jepa_wm.vision import RandomModule
    from jepa_wm.vision.train import save_final

    out = run_dir / "controller"
    assert (out / "DONE.json").exists()  # finished by the test above
    torch.manual_seed(123)
    save_final(RandomModule(latent_dim=16), tmp_path / "other.ckpt")
    args = [*parts(run_dir), "--out", str(out)]
    args[args.index("--vision") + 1] = str(tmp_path / "other.ckpt")
    proc = cli("train-controller", *args, check=False)
    assert proc.returncode == 2 and "nothing to do" not in proc.stdout
    assert "other.ckpt: not the V whose latents trained" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_controller_resumes_after_sigkill_exactly(run_dir):
    out = run_dir / "killed"
    args = ["train-controller", *parts(run_dir), "--out", str(out),
            "--controller_train.generations", "12"]
    proc = subprocess.Popen([sys.executable, "-m", "jepa_wm.cli", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history_file = out / "history.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history_file.exists() and len(json.loads(history_file.read_text())) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = json.loads(history_file.read_text())
    assert 2 <= len(before) < 12 and not (out / "DONE.json").exists()

    cli(*args)
    after = json.loads(history_file.read_text())
    assert [h["generation"] for h in after] == list(range(1, 13))
    # the resumed run continues the same search: compare with an uninterrupted run
    cli("train-controller", *parts(run_dir), "--out", str(run_dir / "straight"),
        "--controller_train.generations", "12")
    straight = json.loads((run_dir / "straight" / "history.json").read_text())
    keys = ("best", "mean", "worst", "sigma")
    assert [[h[k] for k in keys] for h in after] == [[h[k] for k in keys] for h in straight]


def test_controller_threads_change_speed_not_the_search(run_dir):
    """``controller_train.threads`` is speed-only: a finished stage stays finished, a run at
    2 threads searches exactly as one at 1, and a bad count is a one-line error."""
    from jepa_wm.controller import torch_threads

    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
        with torch_threads(None):
            assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before

    done = cli("train-controller", *parts(run_dir), "--out", str(run_dir / "controller"),
               "--controller_train.threads", "2")
    assert "nothing to do" in done.stdout
    cli("train-controller", *parts(run_dir), "--out", str(run_dir / "two_threads"),
        "--controller_train.threads", "2")
    keys = ("best", "mean", "worst", "sigma", "steps")
    two, one = (json.loads((run_dir / d / "history.json").read_text())
                for d in ("two_threads", "controller"))
    assert [[h[k] for k in keys] for h in two] == [[h[k] for k in keys] for h in one]
    bad = cli("train-controller", *parts(run_dir), "--out", str(run_dir / "no_threads"),
              "--controller_train.threads", "0", check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "controller_train.threads: 0; accepted: >= 1" in bad.stderr


def test_fused_kernel_trains_c_through_the_cli_or_names_the_missing_compiler(run_dir,
                                                                              tmp_path):
    """``controller_train.kernel: fused`` is a new stage (not the eager run's record), its
    CMA-ES rates the first generation's candidates as the eager dream does, and without a
    compiler it is a one-line error naming the compiler."""
    out = tmp_path / "fused"
    cli("train-controller", *parts(run_dir), "--out", str(out),
        "--controller_train.kernel", "fused")
    keys = ("best", "mean", "worst")
    fused, eager = (json.loads((d / "history.json").read_text())
                    for d in (out, run_dir / "controller"))
    assert len(fused) == len(eager)
    assert np.allclose([fused[0][k] for k in keys], [eager[0][k] for k in keys], rtol=0.02)
    no_cxx = {**ENV, "CXX": str(tmp_path / "no-such-g++"), "JEPA_WM_CACHE": str(tmp_path)}
    bad = subprocess.run([sys.executable, "-m", "jepa_wm.cli", "train-controller",
                          *parts(run_dir), "--out", str(tmp_path / "no_cxx"),
                          "--controller_train.kernel", "fused"],
                         env=no_cxx, text=True, capture_output=True, timeout=600)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "controller_train.kernel fused: no C++ compiler" in bad.stderr
    assert "no-such-g++" in bad.stderr and "kernel: eager" in bad.stderr
    assert not (tmp_path / "no_cxx" / "best.npz").exists()


def test_evaluate_rejects_a_controller_for_another_m(run_dir, tmp_path):
    action = {"type": "discrete", "n": 3}
    ControllerFile(np.zeros(num_params(5 + 7, action), np.float32), 5, 7, False,
                   action).save(tmp_path / "other.npz")
    proc = cli("evaluate", *parts(run_dir), "--controller", str(tmp_path / "other.npz"),
               "--out", str(tmp_path / "eval"), check=False)
    assert proc.returncode == 2 and "other.npz" in proc.stderr


def test_play_real_sums_m_hazard_along_each_episode_it_played(run_dir):
    """The hazard summed per real episode is M's per-step hazard over exactly that
    episode's steps: with a done head fixed at one logit it is length x sigmoid(logit),
    episode by episode, whichever env played it, and each ended episode says if it died."""
    from jepa_wm.controller.real import play_real
    from jepa_wm.memory import load_memory
    from jepa_wm.nets.controller import controller_input_dim
    from jepa_wm.pipeline import resolve
    from jepa_wm.vision import load_vision

    cfg = resolve([SMOKE], 0, run_dir / "unused")
    memory = load_memory(run_dir / "memory" / "final.ckpt")
    with torch.no_grad():
        memory.net.head.weight[-1].zero_()
        memory.net.head.bias[-1] = -3.0
    vision = load_vision(run_dir / "vision" / "final.ckpt")
    n = controller_input_dim(memory.latent_dim, memory.net.hidden_size, False)
    population = ControllerPopulation(torch.zeros(1, num_params(n, memory.action)), n,
                                      memory.action)
    out = play_real(EnvSettings.of(cfg), vision, memory, population, np.zeros(3, dtype=np.int64),
                    np.array([11, 12, 13]), False, workers=2)
    expected = out["lengths"] * float(memory.hazard(torch.tensor(-3.0)))
    assert out["hazard_sums"] == pytest.approx(expected, rel=1e-5)
    assert len(set(out["lengths"])) > 1  # distinct lengths: sums were not mixed up
    # a still policy dies on take-cover well before the 2,100-step cap
    assert out["died"].all() and (out["lengths"] < 2100).all()


def test_a_real_episode_is_the_same_whatever_the_number_of_envs(run_dir):
    """``workers`` is a speed setting: each job's episode (its env seed, and V's posterior
    noise from the job's own stream) is the same played on 1 env or spread over 3, for a C
    whose action follows z."""
    from jepa_wm.controller.real import play_real
    from jepa_wm.memory import load_memory
    from jepa_wm.nets.controller import controller_input_dim
    from jepa_wm.pipeline import resolve
    from jepa_wm.vision import VAEModule

    cfg = resolve([SMOKE], 0, run_dir / "unused")
    memory = load_memory(run_dir / "memory" / "final.ckpt")
    torch.manual_seed(0)
    vision = VAEModule(latent_dim=memory.latent_dim).eval()  # a V with a posterior: z noise
    n = controller_input_dim(memory.latent_dim, memory.net.hidden_size, False)
    params = 0.1 * torch.randn(1, num_params(n, memory.action),
                               generator=torch.Generator().manual_seed(4))
    population = ControllerPopulation(params, n, memory.action)

    def play(workers):
        return play_real(EnvSettings.of(cfg), vision, memory, population,
                         np.zeros(4, dtype=np.int64), np.array([21, 22, 23, 24]), False,
                         workers=workers)
    one, three = play(1), play(3)
    assert len(set(one["lengths"])) > 1  # the jobs are different episodes
    for key in ("returns", "lengths", "hazard_sums"):
        np.testing.assert_allclose(one[key], three[key], rtol=1e-5, err_msg=key)


def test_iterate_worlds_all_trains_the_round_s_c_in_every_m_s_dream(run_dir, tmp_path,
                                                                   monkeypatch):
    """``iterate.worlds: all``: round 1's C is trained in round 1's M's dream and in round
    0's (the real env, a real round: C plays, M trains further), round 1's M its memory in
    both. CMA-ES itself is replaced by a recorder of the dreams it is handed."""
    from jepa_wm.controller import cmaes
    from jepa_wm.memory import load_memory
    from jepa_wm.nets.controller import controller_input_dim
    from jepa_wm.stages import build_parser
    from jepa_wm.stages.iterate import main

    m0 = load_memory(run_dir / "memory" / "final.ckpt")
    dim = controller_input_dim(m0.latent_dim, m0.net.hidden_size, False)
    ControllerFile(np.zeros(num_params(dim, m0.action), np.float32), m0.latent_dim,
                   m0.net.hidden_size, False, m0.action).save(tmp_path / "c0.npz")
    handed = []

    class Recorder:
        def __init__(self, cc, seed, memory, dream, real, out, run=None):
            handed.append((memory, dream))
            self.out = Path(out)

        def run(self):
            self.out.mkdir(parents=True, exist_ok=True)
            (tmp_path / "c0.npz").rename(self.out / "best.npz")
            (self.out / "history.json").write_text(json.dumps([{"best_so_far": 0.0}]))

    monkeypatch.setattr(cmaes, "Trainer", Recorder)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    parser, _ = build_parser("iterate")
    main(parser.parse_args([*parts(run_dir), "--controller", str(tmp_path / "c0.npz"),
                            "--out", str(tmp_path / "iterate"), "--iterate.rounds", "1",
                            "--iterate.episodes", "1", "--iterate.worlds", "all",
                            "--evaluate.fidelity_hold_episodes", "0"]))
    [(memory, dreams)] = handed
    assert [d.memory is memory for d in dreams] == [True, False]
    assert dreams[0].observer is None and dreams[1].observer is memory
    world0 = dreams[1].memory.state_dict()
    for key, value in m0.state_dict().items():  # the second world is round 0's M
        assert torch.equal(world0[key], value), key
    assert any(not torch.equal(memory.state_dict()[k], v)  # round 1's M trained further
               for k, v in m0.state_dict().items() if v.is_floating_point())
