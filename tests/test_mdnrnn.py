"""M: the mixture NLL against torch.distributions, sampling statistics at tau -> 0 and
tau = 1, the cell-level step against the LSTM, the checkpoint round trip."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import pytest
import torch
from torch import distributions as dist

from jepa_wm.envs import ActionSpace
from jepa_wm.io import UserError
from jepa_wm.memory import MDNRNNModule, load_memory, save_memory
from jepa_wm.nets.mdnrnn import MDNRNN, MDNOutput, gmm_nll, sample_gmm

torch.set_num_threads(1)
DISCRETE = ActionSpace(gym.spaces.Discrete(3)).to_dict()


def random_mixture(n=4, d=6, k=5, shared=False, seed=0) -> MDNOutput:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) if shared else torch.randn(n, d, k, generator=g)
    return MDNOutput(logits, 3 * torch.randn(n, d, k, generator=g),
                     0.3 * torch.randn(n, d, k, generator=g), torch.zeros(n), torch.zeros(n))


@pytest.mark.parametrize("shared", [False, True])
def test_gmm_nll_matches_mixture_same_family(shared):
    m = random_mixture(shared=shared)
    z = torch.randn(4, 6)
    sigma = m.log_sigma.exp()
    if shared:
        ref = dist.MixtureSameFamily(
            dist.Categorical(logits=m.logit_pi),
            dist.Independent(dist.Normal(m.mu.transpose(1, 2), sigma.transpose(1, 2)), 1))
        expected = -ref.log_prob(z)
    else:
        ref = dist.MixtureSameFamily(dist.Categorical(logits=m.logit_pi),
                                     dist.Normal(m.mu, sigma))
        expected = -ref.log_prob(z).sum(-1)
    torch.testing.assert_close(gmm_nll(z, m.logit_pi, m.mu, m.log_sigma), expected)


@pytest.mark.parametrize("shared", [False, True])
def test_sampling_at_tau_to_zero_is_the_mode_component_mean(shared):
    m = random_mixture(shared=shared)
    z = sample_gmm(m, tau=1e-6, generator=torch.Generator().manual_seed(1))
    k = m.logit_pi.argmax(-1)  # (n, d) or (n,)
    k = k.unsqueeze(-1).expand(-1, m.mu.shape[1]) if shared else k
    expected = m.mu.gather(-1, k.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(z, expected, atol=1e-2, rtol=0)


def test_sampling_at_tau_one_matches_mixture_moments():
    m = random_mixture(n=1, d=3)
    n = 200_000
    rep = MDNOutput(*(x.expand(n, *x.shape[1:]) for x in m))
    z = sample_gmm(rep, tau=1.0, generator=torch.Generator().manual_seed(2))
    pi = torch.softmax(m.logit_pi[0], -1)
    mu, var = m.mu[0], m.log_sigma[0].exp() ** 2
    mean = (pi * mu).sum(-1)
    variance = (pi * (var + mu ** 2)).sum(-1) - mean ** 2
    torch.testing.assert_close(z.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(z.var(0), variance, atol=0.0, rtol=0.03)


def test_higher_tau_spreads_samples():
    m = random_mixture(n=1, d=3)
    rep = MDNOutput(*(x.expand(50_000, *x.shape[1:]) for x in m))
    g = torch.Generator().manual_seed(3)
    assert (sample_gmm(rep, 1.5, generator=g).var(0) > sample_gmm(rep, 1.0, generator=g)
            .var(0)).all()


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_bad_tau_is_a_user_error(tau):
    with pytest.raises(UserError, match="tau"):
        sample_gmm(random_mixture(), tau=tau)


@pytest.mark.parametrize("shared", [False, True])
def test_shapes_and_step_equals_forward(shared):
    net = MDNRNN(latent_dim=6, action_dim=3, hidden_size=16, num_mixtures=4,
                 shared_mixture=shared)
    z, a = torch.randn(2, 5, 6), torch.randn(2, 5, 3)
    pred, (h, c) = net(z, a)
    assert pred.mu.shape == pred.log_sigma.shape == (2, 5, 6, 4)
    assert pred.logit_pi.shape == ((2, 5, 4) if shared else (2, 5, 6, 4))
    assert pred.reward.shape == pred.done_logit.shape == (2, 5)
    with torch.no_grad():
        hs, cs = net.initial_state(2)
        for t in range(5):
            step, hs, cs = net.step(z[:, t], a[:, t], hs, cs)
        torch.testing.assert_close(step.mu, pred.mu[:, -1])
        torch.testing.assert_close((hs, cs), (h, c))


def test_bf16_step_stays_close_to_fp32_and_follows_weight_changes():
    """M's step with bf16 matmuls: fp32 state and outputs, within bf16 rounding of the fp32
    step (8 bits of mantissa), and its cached bf16 weights follow an in-place update."""
    torch.manual_seed(0)
    net = MDNRNN(latent_dim=8, action_dim=3, hidden_size=32, num_mixtures=5).eval()
    z, a = torch.randn(16, 8), torch.randn(16, 3)
    h, c = 0.1 * torch.randn(16, 32), 0.1 * torch.randn(16, 32)
    with torch.no_grad():
        p32, h32, c32 = net.step(z, a, h, c)
        p16, h16, c16 = net.step(z, a, h, c, torch.bfloat16)
        assert h16.dtype == c16.dtype == p16.mu.dtype == torch.float32
        torch.testing.assert_close((h16, c16), (h32, c32), atol=2e-2, rtol=0)
        torch.testing.assert_close(p16.mu, p32.mu, atol=2e-2, rtol=0)
        assert not torch.equal(p16.mu, p32.mu)  # the bf16 path really ran
        net.head.bias.add_(1.0)
        moved, _, _ = net.step(z, a, h, c, torch.bfloat16)
        torch.testing.assert_close(moved.mu, p16.mu + 1.0, atol=2e-2, rtol=0)
        net.lstm.bias_hh_l0.add_(0.5)  # the cell's cached weights follow too, in both dtypes
        for dtype in (torch.float32, torch.bfloat16):
            fresh = copy.deepcopy(net)
            fresh.__dict__.pop("_step_cache", None)
            assert not torch.equal(net.step(z, a, h, c, dtype)[1], h32)
            torch.testing.assert_close(net.step(z, a, h, c, dtype)[1:],
                                       fresh.step(z, a, h, c, dtype)[1:], atol=0, rtol=0)


def test_module_losses_and_checkpoint_round_trip(tmp_path):
    module = MDNRNNModule(latent_dim=6, action=DISCRETE, hidden_size=16, num_mixtures=3)
    module.latent_mean.fill_(2.0)
    batch = {"z": torch.randn(3, 9, 6), "a": torch.randint(0, 3, (3, 9)),
             "r": torch.ones(3, 9), "done": torch.zeros(3, 9),
             "mask": torch.ones(3, 9, dtype=torch.bool)}
    losses = module.losses(batch)
    assert set(losses) == {"loss", "objective", "gmm_nll", "reward_loss", "done_loss", "state"}
    torch.testing.assert_close(losses["objective"], losses["loss"])  # no padding: the same
    assert all(torch.isfinite(losses[k]) for k in ("loss", "gmm_nll", "reward_loss",
                                                   "done_loss"))
    assert losses["state"][0].shape == (3, 16)
    save_memory(module, tmp_path / "final.ckpt")
    loaded = load_memory(tmp_path / "final.ckpt")
    assert loaded.latent_mean[0] == 2.0 and loaded.action == DISCRETE
    torch.testing.assert_close(loaded.losses(batch)["loss"], module.eval().losses(batch)["loss"])


def test_loading_another_kind_of_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "vision.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, path)
    with pytest.raises(UserError, match="vision.ckpt.*not an M checkpoint"):
        load_memory(path)


def test_hazard_undoes_the_class_weight():
    """A weight w on deaths moves the optimal logit by log w; hazard takes it back out, so
    a weighted head and an unweighted one give the dream the same death rate."""
    logits = torch.linspace(-8, 3, 12)
    plain = MDNRNNModule(latent_dim=2, action=DISCRETE, hidden_size=4)
    weighted = MDNRNNModule(latent_dim=2, action=DISCRETE, hidden_size=4, done_pos_weight=10.0)
    torch.testing.assert_close(plain.hazard(logits), torch.sigmoid(logits))
    torch.testing.assert_close(weighted.hazard(logits + math.log(10.0)), torch.sigmoid(logits))
    # the optimum of the weighted BCE for a true rate p is the logit of w p / (w p + 1 - p)
    p = 0.01
    opt = torch.tensor(math.log(10 * p / (1 - p)))
    torch.testing.assert_close(weighted.hazard(opt), torch.tensor(p))


def test_every_step_weighs_the_same_in_every_batch():
    """The objective is the sum over real steps / the batch's B x T slots, so a batch is the
    sum of its lanes and a lane that has ended after 3 steps (an epoch's tail) gives those
    steps the weight a full lane's steps have. (Dividing by the real steps, as ``loss``
    does, gave them more, and the deaths at episode ends with them: a head that ended each
    data epoch predicting twice the deaths it sees.)"""
    torch.manual_seed(0)
    module = MDNRNNModule(latent_dim=4, action=DISCRETE, hidden_size=8, num_mixtures=2)
    B, T = 3, 7
    batch = {"z": torch.randn(B, T + 1, 4), "a": torch.randint(0, 3, (B, T + 1)),
             "r": torch.rand(B, T + 1), "done": torch.zeros(B, T + 1),
             "mask": torch.ones(B, T + 1, dtype=torch.bool)}
    batch["mask"][1, 3:] = False  # lane 1 ended: its death, then padding
    batch["done"][1, 2] = 1.0
    batch["mask"][2, :] = False  # lane 2 has no episode left in this data epoch
    lanes = [module.losses({k: v[b:b + 1] for k, v in batch.items()}) for b in range(B)]
    whole = module.losses(batch)
    assert float(whole["objective"]) == pytest.approx(
        sum(float(lane["objective"]) for lane in lanes) / B, rel=1e-5)
    # the per-step means (what is logged) do not add up so: lane 1's steps weigh more there
    assert float(whole["loss"]) != pytest.approx(
        sum(float(lane["loss"]) for lane in lanes[:2]) / 2, rel=1e-3)
    full = {k: v[:1] for k, v in batch.items()}
    torch.testing.assert_close(module.losses(full)["objective"], module.losses(full)["loss"])
