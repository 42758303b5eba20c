"""Vision models: loss terms against hand-computed cases, the shared V contract, checkpoints,
the collapse demonstration on real VizDoom frames, and ``train-vision`` through the CLI."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from jepa_wm.io import UserError
from jepa_wm.nets import TimmEncoder
from jepa_wm.vision import JEPAModule, RandomModule, VAEModule, load_vision, losses
from jepa_wm.vision.diagnostics import effective_rank, is_collapsed, latent_stats
from jepa_wm.vision.train import NonFiniteLoss, save_final

torch.set_num_threads(1)  # other test processes share the 2 cores
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/experiments/smoke.yaml"
VARIANTS = sorted((ROOT / "configs/variants").glob("*.yaml"))


def _trainer(steps: int, **kw) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, **kw)


# -- loss terms against small hand-computed cases ---------------------------------------------

def test_vicreg_variance_hand_case():
    # dim 0: var 2 -> std > 1 -> no penalty; dim 1: var 0 -> std sqrt(1e-4) = 0.01 -> 0.99
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert losses.vicreg_variance(z).item() == pytest.approx((0 + 0.99) / 2, abs=1e-6)


def test_vicreg_covariance_hand_case():
    # cov = [[2, 2], [2, 2]]: off-diagonal squares 4 + 4 = 8, divided by D = 2
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert losses.vicreg_covariance(z).item() == pytest.approx(4.0)
    assert losses.vicreg_covariance(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == 0.0


def _epps_pulley_numpy(x: np.ndarray) -> float:
    """The statistic of one 1-D sample, written out independently with numpy."""
    t = np.linspace(-5, 5, 17)
    g = np.exp(-t ** 2 / 2)
    ecf_re = np.cos(np.outer(x, t)).mean(0)
    ecf_im = np.sin(np.outer(x, t)).mean(0)
    err = ((ecf_re - g) ** 2 + ecf_im ** 2) * g
    return float(np.sum((err[1:] + err[:-1]) / 2 * np.diff(t)) * len(x))


@pytest.mark.parametrize("sample", [[0.0, 0.0, 0.0], [1.0, -1.0], [0.3, -1.2, 2.0, 0.1]])
def test_sigreg_hand_cases(sample):
    x = torch.tensor(sample, dtype=torch.float64)[:, None]
    got = losses.sigreg(x, directions=torch.ones(1, 1, dtype=torch.float64)).item()
    assert got == pytest.approx(_epps_pulley_numpy(np.array(sample)), rel=1e-9)
    if sample == [0.0, 0.0, 0.0]:  # the ecf of a point mass is 1: err = (1 - g)^2 g
        t = np.linspace(-5, 5, 17)
        g = np.exp(-t ** 2 / 2)
        assert got == pytest.approx(3 * np.trapezoid((1 - g) ** 2 * g, t), rel=1e-9)


def test_sigreg_prefers_a_gaussian_to_a_collapsed_batch():
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(512, 16, generator=g)
    collapsed = gauss[:, :1].repeat(1, 16) * 0.01
    # under N(0, 1) the N-scaled statistic is O(1); a near point mass costs O(N)
    assert 10 * losses.sigreg(gauss, seed=1) < losses.sigreg(collapsed, seed=1)


def test_ema_momentum_schedule():
    assert losses.ema_momentum(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert losses.ema_momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert losses.ema_momentum(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert losses.ema_momentum(7, 0, 0.99, 1.0) == 0.99  # unknown length: stay at start


def test_ema_update_arithmetic():
    target, online = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    for p in target.parameters():
        torch.nn.init.zeros_(p)
    for p in online.parameters():
        torch.nn.init.ones_(p)
    losses.ema_update_(target, online, 0.9)
    assert target.weight.item() == pytest.approx(0.1)
    losses.ema_update_(target, online, 0.9)
    assert target.bias.item() == pytest.approx(0.19)  # 0.9 * 0.1 + 0.1


def test_ema_target_keeps_its_own_batchnorm_statistics(doom_store):
    """The EMA target averages the online net's weights, not its BatchNorm statistics: its
    lagged weights give other features, so the online net's running mean and variance would
    mis-normalise them in eval mode (the validation's prediction error was 0.43 per dim of
    online-target mismatch on a 4,000-step V whose networks agree to 0.008 with their own
    statistics). The target's statistics come from its own forward passes; the EMA update
    leaves them alone; and once they have settled on its features (the end of a long run,
    whose weights move slower than BatchNorm's statistics), the two nets embed the same
    frames alike in eval mode, as in training. (After a short run alone the check is
    seed-dependent: both nets' statistics still lag features that move every step.)"""
    _, windows, frames = _doom(doom_store)
    pl.seed_everything(0, verbose=False)
    m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse="ema", lr=2e-3,
                   predictor_hidden=64, ema_momentum=0.9, ema_momentum_end=0.9)
    loader = DataLoader(windows, batch_size=32, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    _trainer(60).fit(m.train(), loader)
    online_bn, target_bn = m.online[-1], m.target[-1]
    assert target_bn.num_batches_tracked == online_bn.num_batches_tracked == 60
    assert not torch.equal(online_bn.running_mean, target_bn.running_mean)
    stats = {k: v.clone() for k, v in m.target.state_dict().items() if "running" in k}
    losses.ema_update_(m.target, m.online, 0.5)
    assert stats and all(torch.equal(m.target.state_dict()[k], v) for k, v in stats.items())
    with torch.no_grad():
        x = m.to_float(frames)
        for _ in range(30):  # weights held: each net's statistics settle on its features
            for chunk in x.split(32):
                m.online(chunk), m.target(chunk)
        m.eval()
        mismatch = (m.online(x) - m.target(x)).pow(2).mean().item()
        borrowed = copy.deepcopy(m.target)
        borrowed[-1].load_state_dict(online_bn.state_dict())  # the old code's target
        old = (m.online(x) - borrowed(x)).pow(2).mean().item()
    assert mismatch < 0.5 * old, (mismatch, old)


def test_effective_rank_and_collapse_alarm():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(4000, 8, generator=g)
    assert effective_rank(iso) > 7.5
    line = torch.randn(500, 1, generator=g) * torch.randn(1, 8, generator=g) + 3.0
    assert effective_rank(line) < 1.05
    stats = latent_stats(torch.cat([iso[:500, :2], torch.full((500, 6), 0.5)], 1))
    assert stats["dead_fraction"] == pytest.approx(6 / 8)
    assert is_collapsed(stats) and not is_collapsed(latent_stats(iso))


def test_vae_kl_has_the_papers_free_bits():
    m = VAEModule(latent_dim=4)
    for layer in (m.mu, m.logvar):  # posterior = prior: KL = 0, floored at 0.5 * 4
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    out = m.losses(torch.rand(3, 3, 64, 64))
    assert out["kl"].item() == pytest.approx(2.0)
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 2.0)


# -- the shared contract ----------------------------------------------------------------------

def _models():
    return [VAEModule(latent_dim=8), JEPAModule(latent_dim=8, action_dim=3),
            JEPAModule(latent_dim=8, action_dim=3, anti_collapse="vicreg"),
            RandomModule(latent_dim=8)]


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_every_v_encodes_uint8_to_latent_dim(model, tmp_path):
    model.eval()
    obs = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    z = model.encode(obs)
    assert z.shape == (5, model.latent_dim) and z.dtype == torch.float32
    assert torch.equal(z, model.encode(obs))  # VAE: the mean, not a sample
    with pytest.raises(UserError, match="not a batch of images"):
        model.encode(obs[0])
    # rebuilt from the checkpoint alone, which holds only plain data
    path = tmp_path / "final.ckpt"
    save_final(model, path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["kind"] == "jepa_wm.vision" and ckpt["spec"] == model.spec
    again = load_vision(path)
    assert type(again) is type(model) and torch.allclose(again.encode(obs), z)


def test_timm_encoder_checkpoint_round_trip(tmp_path):
    m = JEPAModule(latent_dim=8, action_dim=3,
                   encoder=TimmEncoder("vit_tiny_patch16_224", img_size=64, patch_size=16))
    m.eval()
    save_final(m, tmp_path / "v.ckpt")
    obs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.allclose(load_vision(tmp_path / "v.ckpt").encode(obs), m.encode(obs))


def test_v_and_m_share_one_checkpoint_format_and_refuse_each_other(tmp_path):
    """V's and M's final.ckpt are both io.save_checkpoint's {kind, spec, state_dict, ...};
    each loader names the other's file as the wrong kind; V's older Lightning-style file
    (state_dict + hyper_parameters.spec) still loads."""
    from jepa_wm.memory import MDNRNNModule, load_memory, save_memory

    v = VAEModule(latent_dim=8).eval()
    save_final(v, tmp_path / "v.ckpt")
    m = MDNRNNModule(latent_dim=8, action={"type": "Discrete", "n": 3, "start": 0},
                     hidden_size=16)
    save_memory(m, tmp_path / "m.ckpt")
    for name, kind in (("v.ckpt", "jepa_wm.vision"), ("m.ckpt", "jepa_wm.memory")):
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["kind"] == kind and {"spec", "state_dict"} <= set(ckpt)
        assert set(ckpt["spec"]) == {"class_path", "init_args"}
    with pytest.raises(UserError, match="v.ckpt: is jepa_wm.vision, not an M checkpoint"):
        load_memory(tmp_path / "v.ckpt")
    with pytest.raises(UserError, match="m.ckpt: not a vision checkpoint"):
        load_vision(tmp_path / "m.ckpt")
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": v.state_dict(), "hyper_parameters": {"spec": v.spec}}, old)
    obs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(load_vision(old).encode(obs), v.encode(obs))


def test_load_vision_refuses_other_checkpoints(tmp_path):
    other = tmp_path / "memory.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"spec": {
        "class_path": "jepa_wm.nets.ConvEncoder", "init_args": {}}}}, other)
    with pytest.raises(UserError, match="memory.ckpt: not a vision checkpoint"):
        load_vision(other)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.ckpt: not a loadable checkpoint"):
        load_vision(junk)
    with pytest.raises(UserError, match="not found"):
        load_vision(tmp_path / "missing.ckpt")


def test_jepa_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="anti_collapse 'bogus'.*ema, vicreg, sigreg, none"):
        JEPAModule(action_dim=3, anti_collapse="bogus")
    with pytest.raises(UserError, match="action_dim"):
        JEPAModule()


@pytest.mark.parametrize("anti_collapse", ["ema", "none"])
def test_jepa_k_step_loss_ignores_padding(anti_collapse):
    torch.manual_seed(0)
    m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse=anti_collapse, rollout_steps=3,
                   predictor_hidden=16)
    obs = torch.randint(0, 256, (4, 4, 3, 64, 64), dtype=torch.uint8)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    batch = {"obs": obs, "a": torch.rand(4, 4, 3), "mask": mask}
    noisy = dict(batch, obs=torch.where(mask[..., None, None, None], obs,
                                        torch.randint_like(obs, 0, 256)))
    assert m.losses(batch)["pred"].item() == pytest.approx(m.losses(noisy)["pred"].item())
    assert m.rollout(torch.zeros(4, 8), batch["a"][:, :3]).shape == (4, 3, 8)


def test_nan_loss_stops_with_step_and_batch_stats():
    class NaNVAE(VAEModule):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) * float("nan")

    data = [{"obs": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)} for _ in range(4)]
    with pytest.raises(UserError, match=r"loss is nan at step 0; batch frames mean"):
        _trainer(2, callbacks=[NonFiniteLoss()]).fit(NaNVAE(latent_dim=4),
                                                     DataLoader(data, batch_size=2))


# -- real VizDoom frames ----------------------------------------------------------------------

def _doom(doom_store, seq_len=1):
    from jepa_wm.data import RolloutStore
    from jepa_wm.data.datasets import WindowDataset

    store = RolloutStore(doom_store)
    frames = torch.from_numpy(store.frames(np.arange(0, store.num_frames, 3)))
    return store, WindowDataset(store, seq_len, stride=1), frames


def test_jepa_none_collapses_while_regularised_variants_do_not(doom_store):
    """Same frames, steps and learning rate: without anti-collapse the embedding's effective
    rank falls (all dims come to say the same thing); EMA, VICReg and SIGReg keep it."""
    _, windows, frames = _doom(doom_store)
    rank = {}
    for ac in ("none", "ema", "vicreg", "sigreg"):
        pl.seed_everything(0, verbose=False)
        m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse=ac, lr=2e-3,
                       predictor_hidden=64)
        rank_before = latent_stats(m.eval().encode(frames))["effective_rank"]
        loader = DataLoader(windows, batch_size=32, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(0))
        _trainer(100).fit(m.train(), loader)
        rank[ac] = latent_stats(m.eval().encode(frames))["effective_rank"]
    assert rank_before > 6  # the random init already spreads z over most of the 8 dims
    assert rank["none"] < 0.5 * rank_before, rank
    for ac in ("ema", "vicreg", "sigreg"):
        assert rank[ac] > 1.5 * rank["none"], rank


#: One small model per timm family, each trained through the CLI from a variant file: what
#: "any timm encoder" is tested on (the ViT at 64 px through timm_kwargs; mobile nets whose
#: pooled features pass through a conv head return more features than num_features).
TIMM_FAMILIES = {
    "resnet": "resnet10t", "mobilenetv3": "mobilenetv3_small_050", "lcnet": "lcnet_050",
    "efficientnet": "tinynet_e", "regnet": "regnetx_002", "convnext": "convnext_atto",
    "vit": "vit_tiny_patch16_224", "ghostnet": "ghostnet_050", "mnasnet": "mnasnet_small",
    "edgenext": "edgenext_xx_small", "dla": "dla46_c", "mobilevit": "mobilevit_xxs",
    "efficientvit": "efficientvit_b0", "hgnetv2": "hgnetv2_b0", "cspnet": "cs3darknet_s",
}


@pytest.mark.parametrize("family", sorted(TIMM_FAMILIES))
def test_any_timm_family_trains_from_a_variant_file_through_the_cli(doom_store, tmp_path,
                                                                    family):
    from jepa_wm import cli

    name = TIMM_FAMILIES[family]
    kwargs = "        timm_kwargs: {img_size: 64, patch_size: 8}\n" if family == "vit" else ""
    variant = tmp_path / f"{family}.yaml"
    variant.write_text(
        f"variant: jepa_{family}\nvision_model:\n  class_path: jepa_wm.vision.JEPAModule\n"
        "  init_args:\n    anti_collapse: ema\n    encoder:\n"
        "      class_path: jepa_wm.nets.TimmEncoder\n      init_args:\n"
        f"        model_name: {name}\n{kwargs}")
    out = tmp_path / "v"
    code = cli.main([str(a) for a in ("train-vision", "--config", SMOKE, "--config", variant,
                                      "--data", doom_store, "--out", out,
                                      "--vision_train.max_steps", "2", *SMALL)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and math.isfinite(metrics["loss"])
    v = load_vision(out / "final.ckpt")
    assert v.latent_dim == 32 and v.online[0].backbone.pretrained_cfg["architecture"] == name
    z = v.encode(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert z.shape == (2, 32) and torch.isfinite(z).all()


# -- train-vision through the CLI -------------------------------------------------------------

def _cli(*args, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "jepa_wm.cli", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, **popen)
    return subprocess.run(cmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


SMALL = ["--vision_train.max_frames", "500", "--vision_train.batch_size", "16",
         "--vision_train.threads", "1"]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.stem)
def test_every_variant_trains_two_steps_from_the_cli(doom_store, tmp_path, variant):
    """Every variant file trains through the CLI: the VAE in a subprocess (the real command,
    with its skip and move-aside), the others in process (the same ``cli.main``, without a
    fresh interpreter's start-up for each of the many variant files)."""
    from jepa_wm import cli

    out = tmp_path / "vision"
    args = ["train-vision", "--config", SMOKE, "--config", variant, "--data", doom_store,
            "--out", out, "--vision_train.max_steps", "2", *SMALL]
    if "max_flops" in variant.read_text():  # a compute budget would outrank the 2 steps
        args += ["--vision_train.max_flops", "null"]
    if variant.stem == "vae":
        run = _cli(*args)
        assert run.returncode == 0, run.stderr[-2000:]
    else:
        assert cli.main([str(a) for a in args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model = load_vision(out / "final.ckpt")
    assert metrics["latent_dim"] == model.latent_dim
    assert metrics["steps"] == (0 if isinstance(model, RandomModule) else 2)
    assert metrics["effective_rank"] > 1 and math.isfinite(metrics["vision/std_mean"])
    assert (out / "DONE.json").exists()
    if variant.stem == "vae":  # same config again: nothing to do; another config: the
        again = _cli("train-vision", "--config", SMOKE, "--config", variant, "--data",  # old
                     doom_store, "--out", out, "--vision_train.max_steps", "2", *SMALL)  # run
        assert again.returncode == 0 and "skipping" in again.stdout  # moves aside, not resumed
        first = (out / "final.ckpt").read_bytes()
        other = _cli("train-vision", "--config", SMOKE, "--config", variant, "--data",
                     doom_store, "--out", out, "--vision_train.max_steps", "3", *SMALL)
        assert other.returncode == 0 and "held work of another config" in other.stdout
        assert json.loads((out / "metrics.json").read_text())["steps"] == 3
        (aside,) = out.parent.glob("vision.replaced-*")
        assert (aside / "final.ckpt").read_bytes() == first


def test_timm_vit_without_its_size_is_one_line_error(doom_store, tmp_path):
    """A model that cannot take 64-px frames is refused in one line naming the model and the
    key to set (the same ViT with ``timm_kwargs`` trains: the timm-family test's ``vit``)."""
    variant = tmp_path / "vit.yaml"
    variant.write_text(
        "variant: jepa_vit\nvision_model:\n  class_path: jepa_wm.vision.JEPAModule\n"
        "  init_args:\n    anti_collapse: ema\n    encoder:\n"
        "      class_path: jepa_wm.nets.TimmEncoder\n      init_args:\n"
        "        model_name: vit_tiny_patch16_224\n")
    bad = _cli("train-vision", "--config", SMOKE, "--config", variant, "--data", doom_store,
               "--out", tmp_path / "bad", "--vision_train.max_steps", "2", *SMALL)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "TimmEncoder(vit_tiny_patch16_224): cannot take 64x64 frames" in bad.stderr
    assert "timm_kwargs: {img_size: 64, patch_size: 8}" in bad.stderr
    assert not (tmp_path / "bad" / "final.ckpt").exists()


# -- JEPA options from the literature ---------------------------------------------------------

def _window_batch(b=4, frames=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randint(0, 256, (b, frames, 3, 64, 64), dtype=torch.uint8, generator=g),
            "a": torch.rand(b, frames, 3, generator=g), "mask": torch.ones(b, frames, dtype=torch.bool),
            "r": torch.ones(b, frames), "done": torch.zeros(b, frames)}


def test_rollout_discount_weights_step_i_by_rho_to_the_i():
    """TD-MPC2's rho: the k-step loss is the rho^(i-1)-weighted mean of the per-step errors
    of the open-loop rollout (and rho 1 the plain mean, as before the option existed)."""
    torch.manual_seed(0)
    m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse="none", rollout_steps=3,
                   rollout_discount=0.5, predictor_hidden=16).eval()
    batch = _window_batch()
    z, z_tgt = m._embed_window(batch["obs"], batch["mask"])
    per_step = (m.rollout(z[:, 0], batch["a"][:, :3]) - z_tgt[:, 1:]).pow(2).mean(-1).mean(0)
    w = torch.tensor([1.0, 0.5, 0.25])
    assert m.losses(batch)["pred"].item() == pytest.approx((per_step * w).sum().item() / w.sum().item(), rel=1e-5)
    m.hparams["spec"]["init_args"]["rollout_discount"] = 1.0
    assert m.losses(batch)["pred"].item() == pytest.approx(per_step.mean().item(), rel=1e-5)


def test_context_frames_feed_the_last_k_embeddings_to_the_predictor():
    """With 3 frames of history the first prediction changes when the oldest frame does;
    the window holds context - 1 + rollout_steps transitions; the rollout slides its
    history forward over its own predictions."""
    torch.manual_seed(0)
    m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse="ema", context_frames=3,
                   rollout_steps=2, predictor_hidden=16).eval()
    assert m.window == 4
    batch = _window_batch(frames=5)
    changed = dict(batch, obs=batch["obs"].clone())
    changed["obs"][:, 0] = 255 - changed["obs"][:, 0]
    assert m.losses(batch)["pred"].item() != pytest.approx(m.losses(changed)["pred"].item())
    ctx = torch.randn(2, 3, 8)
    a = torch.rand(2, 2, 3)
    two = m.rollout(ctx, a)
    first = m.predictor(ctx, a[:, 0])
    second = m.predictor(torch.cat([ctx[:, 1:], first[:, None]], 1), a[:, 1])
    assert torch.allclose(two[:, 0], first) and torch.allclose(two[:, 1], second)


def test_pldm_smoothness_and_inverse_dynamics_terms_enter_the_loss():
    torch.manual_seed(0)
    kw = dict(latent_dim=8, action_dim=3, anti_collapse="vicreg", rollout_steps=3,
              predictor_hidden=16)
    plain = JEPAModule(**kw).eval()
    torch.manual_seed(0)
    pldm = JEPAModule(**kw, vicreg_smooth=0.1, idm_weight=5.2).eval()
    pldm.load_state_dict(plain.state_dict(), strict=False)  # same encoder and predictor
    batch = _window_batch()
    a, b = plain.losses(batch), pldm.losses(batch)
    z, _ = pldm._embed_window(batch["obs"], batch["mask"])
    smooth = (z[:, 1:] - z[:, :-1]).pow(2).mean()
    assert b["smooth"].item() == pytest.approx(smooth.item(), rel=1e-5)
    assert b["idm"] > 0
    assert b["loss"].item() == pytest.approx(
        (a["loss"] + 0.1 * b["smooth"] + 5.2 * b["idm"]).item(), rel=1e-5)


def test_lewm_weighting_adds_lambda_sigreg_to_the_full_prediction_loss():
    torch.manual_seed(0)
    m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse="sigreg", sigreg_lambda=0.1,
                   sigreg_weighting="additive", predictor_dropout=0.1, predictor_hidden=16).eval()
    out = m.losses(_window_batch())
    assert out["loss"].item() == pytest.approx((out["pred"] + 0.1 * out["reg"]).item(), rel=1e-6)
    assert any(isinstance(x, torch.nn.Dropout) for x in m.predictor.modules())
    with pytest.raises(UserError, match="sigreg_weighting 'sum'.*convex or additive"):
        JEPAModule(action_dim=3, sigreg_weighting="sum")


def test_task_heads_learn_the_death_step_whose_next_frame_is_never_stored():
    """The death step's successor frame is not in the store (its mask is False), yet the
    death is trained: the heads read the *predicted* latent of every step that starts from a
    stored frame. A death label there changes the loss; one past the episode does not."""
    torch.manual_seed(0)
    m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse="ema", task_weight=1.0,
                   predictor_hidden=16, rollout_steps=2).eval()
    batch = _window_batch(frames=3)
    batch["mask"][:, 2] = False  # frame 1 is the episode's last stored frame
    dies = dict(batch, done=batch["done"].clone())
    dies["done"][:, 1] = 1.0  # ...and the step from it ends the episode
    assert m.losses(dies)["task_done"].item() != pytest.approx(m.losses(batch)["task_done"].item())
    past = dict(batch, done=batch["done"].clone())
    past["done"][:, 2] = 1.0  # a label on padding is ignored
    assert m.losses(past)["task_done"].item() == pytest.approx(m.losses(batch)["task_done"].item())


def test_task_heads_on_the_embedding_read_z_itself_not_the_predictor():
    """``task_input: embedding``: the reward and death heads read the online embedding of
    the frame each step starts from, so the task losses do not move with the predictor's
    weights (they do with ``predicted``), and a death label on a stored step still counts."""
    batch = _window_batch(frames=3)
    for task_input, moves in (("embedding", False), ("predicted", True)):
        torch.manual_seed(0)
        m = JEPAModule(latent_dim=8, action_dim=3, anti_collapse="ema", task_weight=1.0,
                       predictor_hidden=16, rollout_steps=2, task_input=task_input).eval()
        before = m.losses(batch)["task_done"].item()
        with torch.no_grad():
            for p in m.predictor.parameters():
                p.add_(0.5)
        after = m.losses(batch)["task_done"].item()
        assert (after != pytest.approx(before)) is moves, task_input
        dies = dict(batch, done=batch["done"].clone())
        dies["done"][:, 1] = 1.0
        assert m.losses(dies)["task_done"].item() != pytest.approx(after)
    with pytest.raises(UserError, match="task_input 'z'.*predicted or embedding"):
        JEPAModule(action_dim=3, task_weight=1.0, task_input="z")


# -- compute-matched budgets ------------------------------------------------------------------

def _train_in_process(doom_store, out, variant, *extra):
    from jepa_wm import cli

    args = ["train-vision", "--config", SMOKE, "--config", variant, "--data", doom_store,
            "--out", out, *SMALL, *extra]
    return cli.main([str(a) for a in args])


def test_equal_flops_budget_gives_each_v_the_steps_its_step_cost_allows(doom_store, tmp_path):
    """max_flops: each V trains floor(budget / FLOPs per step) steps (the VAE's step costs
    more than the EMA JEPA's, so it gets fewer), the FLOPs per step are torch's count of one
    forward + backward, and both end within one step's FLOPs of the same budget."""
    from torch.utils.flop_counter import FlopCounterMode

    budget = 2e11
    got = {}
    for name in ("vae", "jepa_ema"):
        out = tmp_path / name
        assert _train_in_process(doom_store, out, ROOT / f"configs/variants/{name}.yaml",
                                 "--vision_train.max_flops", budget) == 0
        b = json.loads((out / "metrics.json").read_text())["budget"]
        assert b["kind"] == "flops" and b["limit"] == budget
        assert b["steps"] == int(budget // b["flops_per_step"])
        assert budget - b["flops_per_step"] < b["flops"] <= budget
        got[name] = b
    assert got["vae"]["flops_per_step"] > got["jepa_ema"]["flops_per_step"]
    assert got["vae"]["steps"] < got["jepa_ema"]["steps"]
    model = load_vision(tmp_path / "vae" / "final.ckpt").train()  # the count, by hand
    x = {"obs": torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)}
    with FlopCounterMode(display=False) as counter:
        model.training_step(x, 0).backward()
    assert counter.get_total_flops() == got["vae"]["flops_per_step"]


def test_equal_seconds_budget_stops_training_on_time(doom_store, tmp_path):
    out = tmp_path / "v"
    assert _train_in_process(doom_store, out, ROOT / "configs/variants/vae.yaml",
                             "--vision_train.max_time", 3, "--vision_train.max_epochs", 1000,
                             "--vision_train.max_steps", -1) == 0
    b = json.loads((out / "metrics.json").read_text())["budget"]
    assert b["kind"] == "seconds" and b["limit"] == 3 and b["seconds"] >= 3
    steps_per_epoch = 30  # 500 frames, 10% held out, batch 16 -> ~28-30 steps an epoch
    assert 0 < b["steps"] < 1000 * steps_per_epoch // 2


def test_epochs_that_end_training_before_max_steps_are_said_and_recorded(doom_store, tmp_path,
                                                                         capsys):
    """max_epochs 1 on a small store is fewer steps than max_steps: V trains the epoch, the
    stage says that max_epochs stopped it, and metrics.json's budget holds the steps trained
    (a ladder rung at 200 episodes once trained 974 of the 4,000 steps its label gave)."""
    out = tmp_path / "v"
    assert _train_in_process(doom_store, out, ROOT / "configs/variants/vae.yaml",
                             "--vision_train.max_epochs", 1,
                             "--vision_train.max_steps", 10_000) == 0
    b = json.loads((out / "metrics.json").read_text())["budget"]
    assert b["kind"] == "steps" and 0 < b["steps"] == b["limit"] < 10_000
    assert (f"train-vision: vision_train.max_epochs 1 is {b['steps']} steps on this store, "
            "fewer than max_steps 10000") in capsys.readouterr().out


def test_a_compute_budget_for_m_is_refused_in_one_line(tmp_path):
    from jepa_wm.config import check_train_config
    from jepa_wm.pipeline import resolve

    cfg = resolve([SMOKE], 0, tmp_path, {"memory_train.max_flops": 1e12})
    with pytest.raises(UserError, match=r"memory_train.max_flops: 1000000000000.0; accepted: null .*"
                                        "vision_train.max_flops"):
        check_train_config(cfg.memory_train, "memory_train")
