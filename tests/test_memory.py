"""M trained the way the dream uses it, on a real VizDoom store: whole episodes in chunks
with the state carried (the same numbers as one pass over each episode), z resampled from
the posterior every batch, a held-out split M never trains on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from jepa_wm.data import RolloutStore
from jepa_wm.data.datasets import EpisodeChunks
from jepa_wm.envs import ActionSpace
from jepa_wm.memory import MDNRNNModule, loss_summary
from tests.conftest import write_test_latents

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
DISCRETE = ActionSpace(gym.spaces.Discrete(3)).to_dict()
D = 4  # the size of conftest.write_test_latents' z


def test_chunks_play_every_step_of_every_episode_once_in_order(doom_store, tmp_path):
    store = RolloutStore(doom_store)
    latents = write_test_latents(store, tmp_path / "z", sigma=False)
    chunks = EpisodeChunks(store, latents, seq_len=64, batch_size=3, shuffle=True, seed=1)
    seen = {e: [] for e in range(store.num_episodes)}
    batches = list(chunks)
    assert len(batches) == len(chunks)
    lane_episode = [None] * 3
    for batch in batches:
        for b in range(3):
            steps = batch["z"][b][batch["mask"][b]][:-1 if batch["mask"][b].all() else None]
            if not len(steps):
                continue
            first = int(np.flatnonzero((latents.z == steps[0].numpy()).all(1))[0])
            e = int(store.episode_of(first))
            if batch["reset"][b]:  # a new episode starts at its first frame
                assert first == store.episode_starts[e] and not seen[e]
                lane_episode[b] = e
            assert e == lane_episode[b]  # otherwise the lane carries on with its episode
            seen[e].extend(range(first, first + len(steps)))
    for e in range(store.num_episodes):  # each input step exactly once, in order
        assert seen[e] == list(range(store.episode_starts[e], store.episode_ends[e]))


def test_carried_chunks_give_the_losses_of_whole_episodes(doom_store, tmp_path):
    """Truncated BPTT only cuts gradients: with the state carried, the losses over short
    chunks equal one pass over each episode from a zero state."""
    store = RolloutStore(doom_store)
    latents = write_test_latents(store, tmp_path / "z", sigma=False)
    torch.manual_seed(0)
    module = MDNRNNModule(latent_dim=D, action=DISCRETE, hidden_size=16, num_mixtures=3)
    longest = int(store.episode_lengths.max())
    whole = loss_summary(module, EpisodeChunks(store, latents, longest, 2, shuffle=False))
    short = loss_summary(module, EpisodeChunks(store, latents, 37, 3, shuffle=False))
    for k in ("gmm_nll", "reward_loss", "done_loss"):
        assert short[k] == pytest.approx(whole[k], rel=1e-4), k
    # and dropping the carry (every chunk from a zero state) changes them
    module._carry.clear()
    chunks = EpisodeChunks(store, latents, 37, 3, shuffle=False)
    forgetful = [module.losses(b)["gmm_nll"].item() for b in chunks]
    assert np.mean(forgetful) != pytest.approx(short["gmm_nll"], rel=1e-3)


def test_packed_chunks_play_every_step_once_and_zero_the_state_where_episodes_begin(
        doom_store, tmp_path):
    """`memory_train.pack`: a lane goes straight on with its next episode inside a chunk.
    Every frame is a step exactly once, `start` marks exactly the episodes' first frames,
    the epoch takes fewer batches than padded chunks, and an M scores the same per-step
    losses on it as on whole episodes from a zero state (its state is zeroed where an
    episode begins, and no next-z target crosses into another episode)."""
    store = RolloutStore(doom_store)
    latents = write_test_latents(store, tmp_path / "z", sigma=False)
    frame_of = {latents.z[i].tobytes(): i for i in range(store.num_frames)}
    packed = EpisodeChunks(store, latents, seq_len=64, batch_size=1, shuffle=True, seed=1,
                           pack=True)
    batches = list(packed)
    assert len(batches) == packed.epoch_length(0)
    assert len(batches) < EpisodeChunks(store, latents, 64, 1, seed=1).epoch_length(0)
    steps, firsts = [], []
    for batch in batches:
        mask, start = batch["mask"][:, :-1], batch["start"][:, :-1]
        frames = [frame_of[z.numpy().tobytes()] for z in batch["z"][:, :-1][mask]]
        steps += frames
        firsts += [f for f, s in zip(frames, start[mask]) if s]
        assert batch["reset"].tolist() == (batch["start"][:, 0] | ~batch["mask"][:, 0]).tolist()
    assert sorted(steps) == list(range(store.num_frames))
    assert sorted(firsts) == sorted(store.episode_starts.tolist())
    assert any(b["start"][:, 1:-1].any() for b in batches)  # episodes do begin mid-chunk

    torch.manual_seed(0)
    module = MDNRNNModule(latent_dim=D, action=DISCRETE, hidden_size=16, num_mixtures=3)
    longest = int(store.episode_lengths.max())
    whole = loss_summary(module, EpisodeChunks(store, latents, longest, 2, shuffle=False))
    packed_losses = loss_summary(module, EpisodeChunks(store, latents, 37, 2, shuffle=False,
                                                       pack=True))
    for k in ("gmm_nll", "reward_loss", "done_loss"):
        assert packed_losses[k] == pytest.approx(whole[k], rel=1e-4), k


def test_train_memory_packs_episodes_when_asked(doom_store, tmp_path):
    """The real CLI with `memory_train.pack: true` trains in fewer steps per epoch than
    padded chunks, to finite losses; `vision_train.pack` is refused in one line."""
    import json

    store = RolloutStore(doom_store)
    args = ("--memory_train.max_epochs", "3", "--memory_train.max_steps", "-1",
            "--memory_train.batch_size", "1",
            "--memory_model.init_args.seq_len", "64", "--memory_train.val_fraction", "0.25")
    packed = train_memory_cli(store, tmp_path / "packed", *args, "--memory_train.pack", "true")
    padded = train_memory_cli(store, tmp_path / "padded", *args)
    steps = [torch.load(d / "last.ckpt", weights_only=True)["global_step"]
             for d in (packed, padded)]
    assert 0 < steps[0] < steps[1]
    metrics = json.loads((packed / "metrics.json").read_text())
    assert np.isfinite(metrics["val_gmm_nll"]) and np.isfinite(metrics["final_done_loss"])
    run = subprocess.run(
        [sys.executable, "-m", "jepa_wm.cli", "train-vision", "--config",
         "configs/experiments/smoke.yaml", "--data", str(doom_store), "--out",
         str(tmp_path / "v"), "--vision_train.pack", "true"], cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True,
        timeout=300, check=False)
    assert run.returncode == 2 and "vision_train.pack: true; accepted: false" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_posterior_latents_are_resampled_every_batch(doom_store, tmp_path):
    store = RolloutStore(doom_store)
    latents = write_test_latents(store, tmp_path / "z", sigma=True)
    assert latents.sigma is not None
    # M's scale is the spread of the sampled z: var(mu) + E[sigma^2], per dim
    mu = np.asarray(latents.z, np.float64)
    expected = np.sqrt(mu.var(0) + np.mean(np.asarray(latents.sigma, np.float64) ** 2, 0))
    np.testing.assert_allclose(latents.std, expected, rtol=1e-4)
    chunks = EpisodeChunks(store, latents, seq_len=2000, batch_size=4, shuffle=False)
    n = chunks.epoch_length(0)
    chunks.total = 2 * n  # the training stream: two epochs, same frames, new noise
    batches = list(chunks)
    first, second = batches[0], batches[n]
    mask = first["mask"]
    assert torch.equal(mask, second["mask"])
    assert not torch.equal(first["z"][mask], second["z"][mask])
    noise = (first["z"][mask] - second["z"][mask]) / np.sqrt(2)  # ~ sigma per dim
    np.testing.assert_allclose(noise.std(0).numpy(), [0.2, 0.2, 0.2, 1.0], rtol=0.1)
    # a validation stream (unshuffled, no total) scores the same draws every time
    val = EpisodeChunks(store, latents, seq_len=2000, batch_size=4, shuffle=False)
    assert torch.equal(next(iter(val))["z"], next(iter(val))["z"])
    assert torch.equal(next(iter(val))["z"], first["z"])


def train_memory_cli(store: RolloutStore, tmp_path: Path, *extra: str) -> Path:
    """``jepa-wm train-memory`` (the real CLI, smoke config) on test latents of ``store``
    with ``extra`` arguments; returns its output folder."""
    write_test_latents(store, tmp_path / "z", sigma=True)
    out = tmp_path / "memory"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "jepa_wm.cli", "train-memory", "--config",
         "configs/experiments/smoke.yaml", "--latents", str(tmp_path / "z"), "--out", str(out),
         *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return out


def test_train_memory_holds_out_episodes_and_reports_their_losses(doom_store, tmp_path):
    """The real CLI: M's checkpoint names its held-out episodes, metrics.json has their
    losses, and the training episodes are the rest."""
    store = RolloutStore(doom_store)
    out = train_memory_cli(store, tmp_path, "--memory_train.val_fraction", "0.5")
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    ckpt = torch.load(out / "final.ckpt", weights_only=True)
    assert metrics["val_episodes"] == 2 and metrics["train_episodes"] == 2
    assert len(ckpt["val_episodes"]) == 2 and metrics["resampled_z"] is True
    assert np.isfinite(metrics["val_gmm_nll"]) and np.isfinite(metrics["val_done_loss"])
    assert "val_objective" not in metrics  # per-slot, not per-step: not a split's loss
    held = store.episode_lengths[ckpt["val_episodes"]].sum()
    assert metrics["train_frames"] == store.num_frames - held


@pytest.mark.parametrize("pack", [False, True])
def test_chunk_stream_started_at_step_k_is_the_tail_of_the_stream_from_zero(doom_store,
                                                                           tmp_path, pack):
    """Step g of M's training stream is the same batch, z noise included, whatever step
    the stream starts from (the epochs in between included): what exact resume needs."""
    store = RolloutStore(doom_store)
    latents = write_test_latents(store, tmp_path / "z", sigma=True)

    def stream(start):
        chunks = EpisodeChunks(store, latents, seq_len=64, batch_size=3, seed=4, start=start,
                               pack=pack)
        chunks.total = chunks.steps(max_epochs=3)
        return chunks

    full = list(stream(0))
    assert len(full) == len(stream(0)) == sum(stream(0).epoch_length(e) for e in range(3))
    assert stream(0).epoch_length(0) < len(full) // 2  # the stream crosses epochs
    for k in (1, stream(0).epoch_length(0), len(full) - 1):
        tail = list(stream(k))
        assert len(tail) == len(full) - k
        for a, b in zip(full[k:], tail):
            assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(full[0]["z"], full[stream(0).epoch_length(0)]["z"])



def test_z_noise_perturbs_the_inputs_only_and_only_while_training(doom_store, tmp_path):
    """z_noise: M reads noisy input latents in training (different losses from a clean M
    with the same weights, reproducible from torch's seed); its targets and its validation
    are clean (eval mode gives the clean M's numbers exactly)."""
    store = RolloutStore(doom_store)
    latents = write_test_latents(store, tmp_path / "z", sigma=False)
    batch = next(iter(EpisodeChunks(store, latents, seq_len=50, batch_size=4, shuffle=False)))
    torch.manual_seed(0)
    clean = MDNRNNModule(latent_dim=D, action=DISCRETE, hidden_size=16)
    noisy = MDNRNNModule(latent_dim=D, action=DISCRETE, hidden_size=16, z_noise=0.5)
    noisy.load_state_dict(clean.state_dict())
    seen = []
    hook = noisy.net.lstm.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    torch.manual_seed(1)
    first = noisy.train().losses(batch)["loss"].item()
    torch.manual_seed(1)
    assert noisy.losses(batch)["loss"].item() == first  # the noise comes from torch's seed
    assert first != pytest.approx(clean.train().losses(batch)["loss"].item())
    assert noisy.eval().losses(batch)["loss"].item() == clean.eval().losses(batch)["loss"].item()
    hook.remove()
    assert not torch.equal(seen[0], seen[2])  # training input differs from the clean input
    with pytest.raises(Exception, match="z_noise"):
        MDNRNNModule(latent_dim=D, action=DISCRETE, z_noise=-1.0)


def test_train_memory_runs_in_bf16_mixed_precision(doom_store, tmp_path):
    """`memory_train.precision: bf16-mixed` trains (Lightning clips M's gradients through
    its precision plugin, which refuses a fused Adam) and leaves finite fp32 weights."""
    out = train_memory_cli(RolloutStore(doom_store), tmp_path,
                           "--memory_train.precision", "bf16-mixed")
    ckpt = torch.load(out / "final.ckpt", weights_only=True)
    weights = [v for k, v in ckpt["state_dict"].items() if v.is_floating_point()]
    assert weights and all(w.dtype == torch.float32 and torch.isfinite(w).all()
                           for w in weights)


def test_the_library_trains_from_plain_sections_the_m_the_cli_trains(doom_store, tmp_path):
    """``train_memory`` takes the sections it uses (a spec dict, a ``TrainConfig``, a seed)
    and, given the smoke config's values as plain Python, writes bit for bit the M the CLI
    writes from the YAML: nothing else of the config reaches it."""
    from jepa_wm.config import TrainConfig
    from jepa_wm.memory import train_memory

    store = RolloutStore(doom_store)
    cli = train_memory_cli(store, tmp_path)
    spec = {"class_path": "jepa_wm.memory.MDNRNNModule",
            "init_args": {"hidden_size": 64, "num_mixtures": 5, "seq_len": 16}}
    metrics = train_memory(spec, TrainConfig(max_epochs=1, max_steps=20, batch_size=16), 0,
                           tmp_path / "z", tmp_path / "library")
    ours = torch.load(tmp_path / "library" / "final.ckpt", weights_only=True)
    theirs = torch.load(cli / "final.ckpt", weights_only=True)
    assert ours["latent_dim"] == D and ours["action"] == DISCRETE  # filled in from the data
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    assert metrics["train_episodes"] + metrics["val_episodes"] == store.num_episodes
