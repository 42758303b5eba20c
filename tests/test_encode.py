"""``jepa-wm encode``: z for every stored frame, tagged with the vision checkpoint's hash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jepa_wm.data import RolloutStore
from jepa_wm.data.latents import LatentSet, write_latents
from jepa_wm.io import UserError, sha256_file
from jepa_wm.vision import JEPAModule, RandomModule, load_vision
from jepa_wm.vision.train import save_final

torch.set_num_threads(1)  # other test processes share the 2 cores
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "jepa_wm.cli", *map(str, args)], check=False,
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def vision_ckpt(tmp_path_factory) -> Path:
    """An untrained JEPA checkpoint: encode only needs a V that loads from its file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vision") / "final.ckpt"
    save_final(JEPAModule(latent_dim=16, action_dim=3).eval(), path)
    return path


def test_encode_writes_every_frame_with_its_checkpoint_hash(doom_store, vision_ckpt, tmp_path):
    out = tmp_path / "latents"
    run = _cli("encode", "--vision", vision_ckpt, "--data", doom_store, "--out", out)
    assert run.returncode == 0, run.stderr[-2000:]
    store = RolloutStore(doom_store)
    latents = LatentSet(out, vision_ckpt=vision_ckpt)
    assert latents.z.shape == (store.num_frames, 16) and latents.z.dtype == np.float32
    assert latents.vision_sha256 == sha256_file(vision_ckpt)
    assert latents.meta["store_identity"]["frames"] == store.num_frames
    assert Path(latents.meta["store"]) == Path(doom_store).resolve()  # M finds its store
    # row i is frame i of the store
    model = load_vision(vision_ckpt)
    idx = np.array([0, store.num_frames // 2, store.num_frames - 1])
    z = model.encode(torch.from_numpy(store.frames(idx))).numpy()
    np.testing.assert_allclose(latents.z[idx], z, rtol=1e-4, atol=1e-5)
    # per-dim mean/std so M can standardise any V's latents to one scale
    np.testing.assert_allclose(latents.mean, latents.z.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(latents.std, latents.z.std(0), rtol=1e-3, atol=1e-5)
    standard = latents.standardized()
    np.testing.assert_allclose(standard.std(0), 1.0, rtol=1e-3)
    # same checkpoint and store again: nothing to do
    again = _cli("encode", "--vision", vision_ckpt, "--data", doom_store, "--out", out)
    assert again.returncode == 0 and "skipping" in again.stdout


def test_stale_latents_are_refused(doom_store, vision_ckpt, tmp_path):
    out = tmp_path / "latents"
    assert _cli("encode", "--vision", vision_ckpt, "--data", doom_store,
                "--out", out).returncode == 0
    other = tmp_path / "other.ckpt"
    save_final(RandomModule(latent_dim=16), other)
    with pytest.raises(UserError, match="made by another vision checkpoint"):
        LatentSet(out, vision_ckpt=other)
    # encoding again with the other V replaces the set and its tag together
    assert _cli("encode", "--vision", other, "--data", doom_store, "--out", out).returncode == 0
    assert LatentSet(out, vision_ckpt=other).vision_sha256 == sha256_file(other)


def test_a_vae_set_holds_the_posterior_and_an_older_set_is_made_again(doom_store, tmp_path):
    """The VAE's latent set has sigma beside z (M resamples from it); a set that older code
    wrote (DONE.json without the format in its hash, no sigma) is encoded again, not
    taken as done."""
    from jepa_wm.vision import VAEModule

    torch.manual_seed(0)
    ckpt = tmp_path / "vae.ckpt"
    save_final(VAEModule(latent_dim=8).eval(), ckpt)
    out = tmp_path / "latents"
    assert _cli("encode", "--vision", ckpt, "--data", doom_store, "--out", out).returncode == 0
    latents = LatentSet(out)
    assert latents.sigma is not None and latents.sigma.shape == latents.z.shape
    assert (latents.sigma > 0).all()
    store = RolloutStore(doom_store)
    model = load_vision(ckpt)
    mu, sigma = model.encode_dist(torch.from_numpy(store.frames(np.array([0, 5]))))
    np.testing.assert_allclose(latents.sigma[[0, 5]], sigma.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(latents.z[[0, 5]], mu.numpy(), rtol=1e-4, atol=1e-6)
    # as the code before sigma.npy stamped it
    from jepa_wm.io import hash_obj, mark_done
    from jepa_wm.vision.encode import store_identity

    (out / "sigma.npy").unlink()
    old = hash_obj({"vision_sha256": sha256_file(ckpt),
                    "store": store_identity(store)["meta_hash"]})
    mark_done(out, old)
    again = _cli("encode", "--vision", ckpt, "--data", doom_store, "--out", out)
    assert again.returncode == 0 and "skipping" not in again.stdout
    assert LatentSet(out).sigma is not None


def test_encode_refuses_a_checkpoint_that_is_not_a_v(doom_store, tmp_path):
    memory = tmp_path / "memory.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden_size": 64}}, memory)
    run = _cli("encode", "--vision", memory, "--data", doom_store, "--out", tmp_path / "z")
    assert run.returncode == 2
    assert "memory.ckpt: not a vision checkpoint" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "z" / "z.npy").exists()


def test_latent_writer_is_atomic(tmp_path):
    def batches():
        yield np.ones((4, 3), np.float32)
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        write_latents(tmp_path, 8, 3, batches(), meta={"vision_sha256": "x"})
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    with pytest.raises(UserError, match="got 4 latents for 8 frames"):
        write_latents(tmp_path, 8, 3, iter([np.ones((4, 3))]))
    with pytest.raises(UserError, match="non-finite"):
        write_latents(tmp_path, 2, 3, iter([np.full((2, 3), np.nan)]))
    write_latents(tmp_path, 2, 3, iter([np.arange(6, dtype=np.float32).reshape(2, 3)]),
                  meta={"vision_sha256": "abc"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["mean"] == [1.5, 2.5, 3.5] and meta["std"] == [1.5, 1.5, 1.5]


def test_latent_set_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match="not a latent set"):
        LatentSet(tmp_path)
