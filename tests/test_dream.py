"""The dream: determinism for a seed, compaction changes nothing, the gymnasium wrapper
passes check_env, bad settings are one-line errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from jepa_wm.dream import Dream, DreamEnv, batch_size, rollout
from jepa_wm.envs import ActionSpace
from jepa_wm.io import UserError
from jepa_wm.memory import MDNRNNModule
from jepa_wm.nets.controller import ControllerPopulation, controller_input_dim, num_params

torch.set_num_threads(1)
DISCRETE = ActionSpace(gym.spaces.Discrete(3)).to_dict()


def small_memory(done_bias: float = -2.5, seed: int = 0) -> MDNRNNModule:
    torch.manual_seed(seed)
    m = MDNRNNModule(latent_dim=8, action=DISCRETE, hidden_size=32, num_mixtures=3)
    with torch.no_grad():
        m.net.head.bias[-1] = done_bias  # deaths happen, at different times per dream
    return m.eval()


def play(dream: Dream, n: int = 48, seed: int = 7, candidates: int = 4) -> dict:
    """Rollouts of a fixed random population (dream i played by candidate i % 4)."""
    dim = controller_input_dim(dream.latent_dim, dream.hidden_size, False)
    params = torch.randn(candidates, num_params(dim, DISCRETE),
                         generator=torch.Generator().manual_seed(0))
    population = ControllerPopulation(params, dim, DISCRETE)
    return rollout(dream, lambda x, i: population(x, i % candidates)[1], n,
                   torch.Generator().manual_seed(seed))


def make_dream(done_bias: float = -2.5, **kw) -> Dream:
    kw = {"done": "sample", "reward": "head", "max_steps": 200, "tau": 1.15, **kw}
    starts = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    return Dream(small_memory(done_bias), starts, **kw)


def test_same_seed_same_dreams_other_seed_other_dreams():
    dream = make_dream()
    a, b, c = play(dream, seed=7), play(dream, seed=7), play(dream, seed=8)
    assert torch.equal(a["returns"], b["returns"]) and torch.equal(a["lengths"], b["lengths"])
    assert not torch.equal(a["returns"], c["returns"])


@pytest.mark.parametrize("done, bias", [("sample", -2.5), ("threshold", -0.1)])
def test_compaction_gives_the_same_dreams(done, bias):
    compact = play(make_dream(bias, done=done, compact=True))
    full = play(make_dream(bias, done=done, compact=False))
    lengths = compact["lengths"]
    assert lengths.min() < lengths.max(), "dreams must end at different times for this test"
    assert torch.equal(lengths, full["lengths"])
    torch.testing.assert_close(compact["returns"], full["returns"])
    # compaction really drops finished dreams: fewer row-steps than n * longest dream
    assert compact["steps"] == int(lengths.sum()) < len(lengths) * int(lengths.max())


def test_compaction_pads_the_batch_to_a_few_sizes_and_changes_no_dream():
    """A compacted batch keeps ``batch_size(live)`` rows: never fewer than the live dreams,
    at most an eighth more, so 600 dreams dying one by one take a few dozen batch sizes
    (oneDNN builds a kernel per matmul shape), and the dreams are those of the full batch."""
    assert [batch_size(n) for n in (0, 1, 15, 16, 17, 100, 574, 1024, 1025)] == \
        [0, 1, 15, 16, 18, 104, 576, 1024, 1152]
    assert all(n <= batch_size(n) <= n + n // 8 for n in range(2000))
    dream = make_dream(-4.0, max_steps=300)
    rows, live = [], []
    compact = rollout(dream, lambda x, i: torch.zeros(len(i), dtype=torch.long), 600,
                      torch.Generator().manual_seed(3),
                      on_step=lambda st, _: (rows.append(len(st.index)), live.append(st.live)))
    full = rollout(make_dream(-4.0, max_steps=300, compact=False),
                   lambda x, i: torch.zeros(len(i), dtype=torch.long), 600,
                   torch.Generator().manual_seed(3))
    assert torch.equal(compact["lengths"], full["lengths"])
    torch.testing.assert_close(compact["returns"], full["returns"])
    assert len(set(live)) > 100  # dreams ended at many different steps
    # each step's rows: the last step's, or batch_size of the dreams still running
    assert rows[0] == 600 and all(r == min(before, batch_size(n)) for before, r, n
                                  in zip(rows, rows[1:], live[1:], strict=False))
    assert 3 * len(set(rows)) < len(set(live)) and rows[-1] < 100


def test_survival_reward_counts_steps_and_time_limit_ends_dreams():
    out = play(make_dream(reward="survival", max_steps=20))
    torch.testing.assert_close(out["returns"], out["lengths"].float())
    assert out["lengths"].max() <= 20


def test_step_batch_shapes():
    dream = make_dream(done="threshold")
    state = dream.reset(5, seed=0)
    nxt, z, reward, done = dream.step(state, torch.zeros(5, dtype=torch.long))
    assert z.shape == (5, 8) and reward.shape == (5,) and done.shape == (5,)
    assert nxt.h.shape[0] == nxt.z.shape[0] == int((~done).sum())
    assert state.controller_input(True).shape == (5, 8 + 2 * 32)


def test_dream_env_passes_check_env():
    env = DreamEnv(make_dream(max_steps=30))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs.shape == env.observation_space.shape
    first = env.step(1)
    env.reset(seed=3)
    again = env.step(1)
    assert (first[0] == again[0]).all() and first[1:4] == again[1:4]


@pytest.mark.parametrize("kw, key", [({"done": "maybe"}, "done"), ({"reward": "x"}, "reward"),
                                     ({"tau": 0.0}, "tau"), ({"max_steps": 0}, "max_steps"),
                                     ({"precision": "16"}, "precision")])
def test_bad_dream_settings_are_user_errors(kw, key):
    with pytest.raises(UserError, match=key):
        make_dream(**kw)


def test_on_step_sees_every_live_step_and_the_hazard_its_death_was_drawn_from():
    """``rollout(on_step=...)`` is called once per step with the live rows before they move
    and M's hazard for exactly those rows and actions; it changes none of the dreams."""
    dream = make_dream(done_bias=-3.0)
    seen = []

    def on_step(state, hazard):
        seen.append((state.index[state.alive], state.alive.sum().item(),
                     hazard[state.alive]))

    plain = play(dream)
    dim = controller_input_dim(dream.latent_dim, dream.hidden_size, False)
    params = torch.randn(4, num_params(dim, DISCRETE), generator=torch.Generator().manual_seed(0))
    population = ControllerPopulation(params, dim, DISCRETE)
    hooked = rollout(dream, lambda x, i: population(x, i % 4)[1], 48,
                     torch.Generator().manual_seed(7), on_step=on_step)
    assert torch.equal(plain["lengths"], hooked["lengths"])
    assert sum(alive for _, alive, _ in seen) == hooked["steps"] == int(plain["lengths"].sum())
    assert len(seen) == int(plain["lengths"].max())
    # each dream's live row appears once per step it lived
    counts = torch.zeros(48, dtype=torch.long)
    for index, _, hazard in seen:
        counts.index_add_(0, index, torch.ones_like(index))
        assert hazard.shape == index.shape and ((hazard > 0) & (hazard < 1)).all()
    assert torch.equal(counts, plain["lengths"])
    # the hazard is M's own for the state and action of that step
    state = dream.reset(3, seed=0)
    info = {}
    dream.step(state, torch.ones(3, dtype=torch.long), info)
    pred, _, _ = dream.net.step(state.z, dream.action.vector(torch.ones(3, dtype=torch.long)),
                                state.h, state.c)
    torch.testing.assert_close(info["hazard"], dream.memory.hazard(pred.done_logit))


def test_an_observer_m_is_c_s_memory_and_never_moves_the_world():
    """With ``observer``, C reads the observer M's h (and z in its standardisation) while
    the world M alone draws the dream: the same M as both is the plain dream exactly; a C
    that ignores its input sees the world's own dreams whatever the observer; one that
    reads its input plays differently; compaction still changes nothing."""
    world, other = small_memory(-2.5, seed=0), small_memory(-2.5, seed=3)
    with torch.no_grad():  # the observer standardises z its own way
        other.latent_mean.fill_(0.3)
        other.latent_std.fill_(2.0)
    starts = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    kw = {"done": "sample", "reward": "survival", "max_steps": 200, "tau": 1.15}
    plain = play(Dream(world, starts, **kw))
    same = play(Dream(world, starts, observer=world, **kw))
    assert torch.equal(plain["lengths"], same["lengths"])
    assert plain["lengths"].min() < plain["lengths"].max()

    def still(dream):  # the no-op whatever C sees
        return rollout(dream, lambda x, i: torch.zeros(len(i), dtype=torch.long), 48,
                       torch.Generator().manual_seed(7))
    assert torch.equal(still(Dream(world, starts, **kw))["lengths"],
                       still(Dream(world, starts, observer=other, **kw))["lengths"])
    def zs(dream):  # the random population's dreams, z by z
        seen = []
        dim = controller_input_dim(8, 32, False)
        params = torch.randn(4, num_params(dim, DISCRETE),
                             generator=torch.Generator().manual_seed(0))
        population = ControllerPopulation(params, dim, DISCRETE)
        out = rollout(dream, lambda x, i: population(x, i % 4)[1], 48,
                      torch.Generator().manual_seed(7),
                      on_step=lambda st, _: seen.append(st.z[st.alive].sum().item()))
        return out["lengths"], seen
    _, plain_z = zs(Dream(world, starts, **kw))
    observed_len, observed_z = zs(Dream(world, starts, observer=other, **kw))
    assert observed_z != plain_z  # C read other inputs, acted otherwise, the world followed
    full_len, _ = zs(Dream(world, starts, observer=other, compact=False, **kw))
    assert torch.equal(observed_len, full_len)
    # C's input: z in the observer's standardisation and the observer's own h
    dream = Dream(world, starts, observer=other, **kw)
    state = dream.reset(4, seed=0)
    raw = state.z * world.latent_std + world.latent_mean
    x = state.controller_input()
    torch.testing.assert_close(x[:, :8], other.standardise(raw))
    a = torch.ones(4, dtype=torch.long)
    nxt, *_ = dream.step(state, a)
    _, h, _ = other.net.step(x[:, :8], dream.action.vector(a), *other.net.initial_state(4))
    torch.testing.assert_close(nxt.controller_input()[:, 8:], h[nxt.index])


def test_an_observer_of_another_latent_size_is_refused():
    world = small_memory()
    other = MDNRNNModule(latent_dim=4, action=DISCRETE, hidden_size=32, num_mixtures=3)
    with pytest.raises(UserError, match="dream observer: an M of z 4"):
        Dream(world, torch.zeros(3, 8), observer=other)


def test_fitness_over_several_worlds_shares_each_candidate_s_rollouts_out():
    """``dream_fitness`` over one world is the plain fitness; over several, each candidate's
    rollouts are shared out evenly (the first worlds take the remainder) and its fitness is
    the mean over all of them: in a world that kills at once and a world that never does
    (at the time limit), a candidate with R rollouts scores the share-weighted mean."""
    from jepa_wm.controller.cmaes import dream_fitness

    starts = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    kw = {"done": "threshold", "reward": "survival", "max_steps": 30}
    deadly = Dream(small_memory(done_bias=8.0), starts, **kw)  # hazard ~1 > 0.5
    safe = Dream(small_memory(done_bias=-8.0), starts, **kw)  # dies never
    dim = controller_input_dim(8, 32, False)
    population = ControllerPopulation(torch.randn(3, num_params(dim, DISCRETE)), dim, DISCRETE)
    counts = np.array([4, 5, 7])
    one, steps_one = dream_fitness(safe, population, counts, 3, False)
    listed, steps_listed = dream_fitness([safe], population, counts, 3, False)
    assert np.array_equal(one, listed) and steps_one == steps_listed == 30 * counts.sum()
    mixed, steps = dream_fitness([safe, deadly], population, counts, 3, False)
    in_safe = counts // 2 + counts % 2  # 2, 3, 4 of 4, 5, 7
    np.testing.assert_allclose(mixed, (30 * in_safe + 1 * (counts - in_safe)) / counts)
    assert steps == int((30 * in_safe + (counts - in_safe)).sum())


# ----------------------------------------------------------------------------- fused kernels


def paper_like_memory(shared: bool) -> MDNRNNModule:
    """An M with K = 5 and a live done head, sized so that every vector loop of the fused
    kernels has full and partial blocks (D 20, H 72)."""
    torch.manual_seed(3)
    m = MDNRNNModule(latent_dim=20, action=DISCRETE, hidden_size=72, num_mixtures=5,
                     shared_mixture=shared)
    with torch.no_grad():
        m.net.head.weight.mul_(4.0)  # peaked, spread mixtures: the draw has to pick
        m.net.head.bias[-1] = -2.0
    return m.eval()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_fused_step_is_the_eager_step(shared, precision):
    """``kernel: fused`` draws the z, h, c, hazard and reward the eager step draws from the
    same noise (fp32: to float rounding; bf16: but where a value's rounding to bf16 flips)."""
    memory = paper_like_memory(shared)
    starts = torch.randn(30, 20, generator=torch.Generator().manual_seed(1))
    out = {}
    for kernel in ("eager", "fused"):
        dream = Dream(memory, starts, tau=1.15, done="sample", precision=precision,
                      kernel=kernel)
        state = dream.reset(300, torch.Generator().manual_seed(5))
        state.h.normal_(0, 0.5, generator=torch.Generator().manual_seed(6))  # a live cell
        state.c.normal_(0, 1.0, generator=torch.Generator().manual_seed(7))
        info = {}
        nxt, z, reward, done = dream.step(state, torch.arange(300) % 3, info)
        out[kernel] = (z, nxt.h, nxt.c, info["hazard"], reward, done)
    (z, h, c, hazard, reward, done), (fz, fh, fc, fhazard, freward, fdone) = \
        out["eager"], out["fused"]
    assert z.std() > 0.5 and done.any() and not done.all()
    if precision == "32":
        torch.testing.assert_close(fz, z, atol=1e-5, rtol=1e-5)
        for a, b in ((fh, h), (fc, c), (fhazard, hazard), (freward, reward)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert torch.equal(fdone, done)
    else:
        assert ((fz - z).abs() < 1e-2).float().mean() > 0.995
        torch.testing.assert_close(fh, h, atol=1e-5, rtol=1e-5)  # the cell: before bf16
        assert ((fhazard - hazard).abs() < 1e-2).all()


def test_fused_rollouts_are_the_eager_rollouts():
    """Whole batches of dreams, compaction and deaths included, end alike in fp32."""
    eager = play(make_dream())
    fused = play(make_dream(kernel="fused"))
    assert eager["lengths"].min() < eager["lengths"].max()
    assert torch.equal(fused["lengths"], eager["lengths"])
    torch.testing.assert_close(fused["returns"], eager["returns"], atol=1e-3, rtol=1e-4)


def test_fused_kernels_leave_denormals_alone():
    """The library is compiled with -ffast-math but not linked with it: gcc would add
    crtfastmath.o, which flushes denormals to zero in every torch op of the process."""
    from jepa_wm.nets.fused import ops

    ops()
    assert torch.tensor([1e-40]).mul(1.0).item() > 0
    assert np.float32(1e-40) * np.float32(1.0) > 0


def test_fused_rows_are_shared_out_over_threads_without_changing_a_bit():
    """The kernels share rows out over torch's threads in chunks: 2 threads draw what 1
    draws, exactly (a chunk writing to the wrong rows fails here)."""
    memory = paper_like_memory(False)
    starts = torch.randn(30, 20, generator=torch.Generator().manual_seed(1))
    dream = Dream(memory, starts, tau=1.15, done="sample", precision="bf16", kernel="fused")
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            state = dream.reset(512, torch.Generator().manual_seed(5))
            for _ in range(3):
                state, z, _, _ = dream.step(state, torch.arange(len(state.index)) % 3)
            out.append((state.index, z, state.h))
        finally:
            torch.set_num_threads(1)
    assert all(torch.equal(a, b) for a, b in zip(*out, strict=True))


def test_fused_observer_keeps_the_eager_observer_s_memory():
    """With an observer M, ``fused`` steps its cell in the kernel too: C reads the h the
    eager observer keeps, and the dreams end alike."""
    world, other = small_memory(-2.5, seed=0), small_memory(-2.5, seed=3)
    starts = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    kw = {"done": "sample", "reward": "survival", "max_steps": 200, "tau": 1.15}
    eager = Dream(world, starts, observer=other, **kw)
    fused = Dream(world, starts, observer=other, kernel="fused", **kw)
    assert torch.equal(play(fused)["lengths"], play(eager)["lengths"])
    a = torch.arange(48) % 3
    (e, *_), (f, *_) = (d.step(d.reset(48, seed=0), a) for d in (eager, fused))
    torch.testing.assert_close(f.controller_input(), e.controller_input())
    assert f.controller_input()[:, 8:].abs().sum() > 0  # the observer's h moved


def test_the_evaluation_dreams_play_c_on_the_dream_s_kernel(monkeypatch):
    """``evaluate``'s dreams of one C (``dream_scores``) run C on the dream's kernel, and
    end alike on either."""
    from jepa_wm.controller import ControllerFile
    from jepa_wm.controller.evaluate import dream_scores

    kernels, population = [], ControllerFile.population
    monkeypatch.setattr(ControllerFile, "population", lambda self, copies=1, kernel="eager":
                        kernels.append(kernel) or population(self, copies, kernel))
    dim = controller_input_dim(8, 32, False)
    params = np.random.default_rng(0).standard_normal(num_params(dim, DISCRETE))
    controller = ControllerFile(params.astype(np.float32), 8, 32, False, DISCRETE)
    eager, fused = (dream_scores(make_dream(kernel=k), controller, 64, seed=0)
                    for k in ("eager", "fused"))
    assert kernels == ["eager", "fused"]
    assert eager["lengths"].min() < eager["lengths"].max()
    assert np.array_equal(fused["lengths"], eager["lengths"])
    np.testing.assert_allclose(fused["returns"], eager["returns"], rtol=1e-4)
