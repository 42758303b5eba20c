"""Peers side by side (issue 14 item 4): V and M training speed against ctallec/world-models
(a public PyTorch World Models) on the same frames, threads and batch, and estool-style
CMA-ES rollouts (one process per worker, one dream at a time) against the batched dream.

    git clone https://github.com/ctallec/world-models /tmp/ctallec-wm   # outside this repo
    python benchmarks/peers.py --peer /tmp/ctallec-wm [--data STORE] [--steps 30]

Their code is imported from that folder (``models/vae.py``, ``models/mdrnn.py``,
``data/loaders.py``), never copied into this one. Their training scripts cannot be imported
(``trainvae.py`` and ``trainmdrnn.py`` parse arguments at import, and ``utils/misc.py``
imports gym's box2d), so their loops are restated here line for line: VAE = their ``VAE(3,
32)``, summed MSE + KL, ``Adam()``; MDRNN = their ``MDRNN(32, 3, 256, 5)``, ``gmm_loss`` +
BCE over (LSIZE + 1), ``RMSprop(lr 1e-3, alpha 0.9)``, V run inside M's loop (``to_latent``)
in the "with their loader" row, as their trainmdrnn.py does. Two departures, stated in the
output: ``F.mse_loss(size_average=False)`` is written ``reduction="sum"`` (the same sum), and
their loaders keep the last 600 files for testing, so the file list is set to all of them.

Rows (all at ``--threads`` torch threads, interleaved repeats, the best shown):

- V compute: an optimiser step on frames already in memory (64x64, batch ``--batch``);
- V with its loader: theirs (npz files of the same frames, PIL resize + random flip per frame,
  ``num_workers`` 2 as trainvae.py) against ours (the train-vision stage's loader over the
  memory-mapped store);
- M compute: sequences of synthetic latents (M's cost does not depend on their values) at
  their shape (batch 16 x 32 steps) and ours (16 x 500), transitions/s;
- M with its loader: theirs (npz sequences + V encoding each batch) against ours (the
  stored latents; V ran once per frame in the encode stage);
- CMA-ES rollouts: estool's pattern (``--workers`` processes, each stepping one dream of one
  candidate at a time: LSTMCell + head + softmax + multinomial at batch 1, one thread each)
  against ``Dream.step`` over the whole generation at once, dream steps/s at the doom_fast
  M (z 32, LSTM 256) and the paper's (z 64, LSTM 512).

Writes ``benchmarks/results/peers.md`` with the command, CPU and load.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from common import cpu_name, loadavg  # benchmarks/common.py (scripts run from their folder)
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LSIZE, ASIZE, RSIZE, K = 32, 3, 256, 5


# ----------------------------------------------------------------------------- data


def write_npz(store, folder: Path, episodes: int) -> int:
    """The store's first ``episodes`` episodes as ctallec's rollout files: ``observations`` uint8 (T, 64, 64, 3),
    one-hot ``actions`` (T, 3), ``rewards``, ``terminals``; returns the number of files."""
    sub = folder / "thread_0"
    sub.mkdir(parents=True)
    n = min(episodes, store.num_episodes)
    for e in range(n):
        ep = store.episode(e)
        np.savez(sub / f"rollout_{e}.npz", observations=ep["frames"].transpose(0, 2, 3, 1),
                 actions=np.eye(ASIZE, dtype=np.float32)[ep["actions"].astype(int)],
                 rewards=ep["rewards"].astype(np.float32),
                 terminals=ep["terminated"].astype(bool))
    return n


def their_dataset(cls, root: Path, *args, **kwargs):
    """One of ctallec's rollout datasets over every file in ``root`` (their split keeps the
    last 600 files for testing)."""
    ds = cls(str(root), *args, **kwargs)
    ds._files = sorted(str(p) for p in root.rglob("*.npz"))
    ds.load_next_buffer()
    return ds


# ----------------------------------------------------------------------------- timing


def rate(step, batches, warmup: int, items_per_step: int) -> float:
    """Items per second of ``step(batch)`` over the batches after ``warmup`` (pulling each
    batch from ``batches`` is timed too: a loader's cost counts)."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    n, start = 0, time.perf_counter()
    for batch in it:
        step(batch)
        n += 1
    return n * items_per_step / (time.perf_counter() - start)


def take(loader, n: int):
    """The first ``n`` batches of ``loader`` (re-iterated when it runs out)."""
    count = 0
    while True:
        for batch in loader:
            if count == n:
                return
            count += 1
            yield batch


def trainer(model: nn.Module, opt, loss_fn, clip: float = 0.0):
    """One optimiser step of ``loss_fn(batch)``, as both sides' loops do it."""
    def step(batch):
        opt.zero_grad()
        loss = loss_fn(batch)
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return step


# ----------------------------------------------------------------------------- V


def their_vae_loss(model):
    def loss(x):  # trainvae.py's loss_function
        recon, mu, logsigma = model(x)
        bce = F.mse_loss(recon, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + 2 * logsigma - mu.pow(2) - (2 * logsigma).exp())
        return bce + kld
    return loss


def our_vae(store):
    from jepa_wm.config import experiment_parser
    from jepa_wm.vision.base import build_vision
    from jepa_wm.vision.train import resolve_spec

    cfg = experiment_parser().parse_args([
        "--config", str(ROOT / "configs/experiments/doom_fast.yaml"),
        "--config", str(ROOT / "configs/variants/vae.yaml")])
    return cfg, build_vision(resolve_spec(cfg.vision_model, store))


def module_loss(model):
    """``model.losses(batch)["loss"]`` (V's and M's modules alike)."""
    return lambda x: model.losses(x)["loss"]


def stage_batches(model, step):
    """``step`` on the float frames of a train-vision batch."""
    return lambda batch: step(model.to_float(model.first_frames(batch)))


def vision_rows(peer, store, npz: Path, args) -> dict[str, list[float]]:
    from jepa_wm.vision.train import _loaders

    from_their = __import__("models.vae", fromlist=["VAE"])
    loaders = __import__("data.loaders", fromlist=["RolloutObservationDataset"])
    from torchvision import transforms

    B, n = args.batch, args.steps + args.warmup
    frames = torch.from_numpy(store.frames(slice(0, B * n))).float() / 255.0
    batches = [frames[i * B:(i + 1) * B] for i in range(n)]
    transform_train = transforms.Compose([  # trainvae.py's
        transforms.ToPILImage(), transforms.Resize((64, 64)),
        transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = their_dataset(loaders.RolloutObservationDataset, npz, transform_train, train=True)
    their_loader = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, num_workers=2)

    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        torch.manual_seed(123)
        theirs = from_their.VAE(3, LSIZE)
        step = trainer(theirs, torch.optim.Adam(theirs.parameters()), their_vae_loss(theirs))
        times.setdefault("V compute | theirs", []).append(rate(step, batches, args.warmup, B))
        times.setdefault("V with its loader | theirs", []).append(
            rate(step, take(their_loader, n), args.warmup, B))
        torch.manual_seed(123)
        cfg, ours = our_vae(store)
        ours.train()
        step = trainer(ours, ours.configure_optimizers(), module_loss(ours))
        times.setdefault("V compute | ours", []).append(rate(step, batches, args.warmup, B))
        cfg.vision_train.batch_size = B
        train_loader, _ = _loaders(ours, store, cfg.vision_train, 0)
        times.setdefault("V with its loader | ours", []).append(rate(
            stage_batches(ours, step), take(train_loader, n), args.warmup, B))
        print("  ".join(f"{k} {v[-1]:.0f}" for k, v in times.items()), flush=True)
    return times


# ----------------------------------------------------------------------------- M


def their_mdrnn_loss(mdrnn, gmm_loss):
    def loss(batch):  # trainmdrnn.py's get_loss, include_reward off (their default)
        latent_obs, action, _reward, terminal, latent_next_obs = [
            arr.transpose(1, 0) for arr in batch]
        mus, sigmas, logpi, _rs, ds = mdrnn(action, latent_obs)
        gmm = gmm_loss(latent_next_obs, mus, sigmas, logpi)
        bce = F.binary_cross_entropy_with_logits(ds, terminal)
        return (gmm + bce) / (LSIZE + 1)
    return loss


def synthetic_sequences(B: int, T: int, n: int, seed: int = 0):
    """n batches of (latents, one-hot actions, rewards, terminals, next latents) (B, T, ...)
    and the same as our M's batch dicts."""
    g = torch.Generator().manual_seed(seed)
    theirs, ours = [], []
    for _ in range(n):
        z = torch.randn(B, T + 1, LSIZE, generator=g)
        a = torch.randint(0, ASIZE, (B, T + 1), generator=g)
        done = (torch.rand(B, T + 1, generator=g) < 1 / 300).float()
        theirs.append((z[:, :-1], F.one_hot(a[:, 1:], ASIZE).float(), torch.ones(B, T),
                       done[:, 1:], z[:, 1:]))
        ours.append({"z": z, "a": a, "r": torch.ones(B, T + 1), "done": done,
                     "mask": torch.ones(B, T + 1, dtype=torch.bool)})
    return theirs, ours


def memory_rows(peer, store, npz: Path, args) -> dict[str, list[float]]:
    from jepa_wm.envs import ActionSpace
    from jepa_wm.memory import MDNRNNModule

    mdrnn_mod = __import__("models.mdrnn", fromlist=["MDRNN", "gmm_loss"])
    vae_mod = __import__("models.vae", fromlist=["VAE"])
    loaders = __import__("data.loaders", fromlist=["RolloutSequenceDataset"])
    from torchvision import transforms

    action = ActionSpace(gym.spaces.Discrete(ASIZE)).to_dict()
    n = args.steps + args.warmup
    shapes = {shape: synthetic_sequences(*shape, n) for shape in ((16, 32), (16, 500))}
    their_t = transforms.Lambda(lambda x: np.transpose(x, (0, 3, 1, 2)) / 255)
    seq_ds = their_dataset(loaders.RolloutSequenceDataset, npz, 32, their_t, buffer_size=30)
    seq_loader = torch.utils.data.DataLoader(seq_ds, batch_size=16, shuffle=True,
                                             num_workers=2, drop_last=True)
    vae = vae_mod.VAE(3, LSIZE).eval()

    def to_latent(obs, next_obs):  # trainmdrnn.py's: V encodes both frames of every step
        with torch.no_grad():
            obs, next_obs = [F.interpolate(x.view(-1, 3, 64, 64), size=64, mode="bilinear",
                                           align_corners=True) for x in (obs, next_obs)]
            (m0, s0), (m1, s1) = [vae(x)[1:] for x in (obs, next_obs)]
            return [(m + s.exp() * torch.randn_like(m)).view(16, 32, LSIZE)
                    for m, s in ((m0, s0), (m1, s1))]

    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for (B, T), (their_batches, our_batches) in shapes.items():
            torch.manual_seed(0)
            theirs = mdrnn_mod.MDRNN(LSIZE, ASIZE, RSIZE, K)
            opt = torch.optim.RMSprop(theirs.parameters(), lr=1e-3, alpha=.9)
            step = trainer(theirs, opt, their_mdrnn_loss(theirs, mdrnn_mod.gmm_loss))
            times.setdefault(f"M compute {B} x {T} | theirs", []).append(
                rate(step, their_batches, args.warmup, B * T))
            if T == 32:
                def full(batch, step=step):
                    obs, act, rew, term, next_obs = [x.float() for x in batch]
                    z, z_next = to_latent(obs, next_obs)
                    step((z, act, rew, term, z_next))
                times.setdefault("M with its loader 16 x 32 | theirs", []).append(
                    rate(full, take(seq_loader, n), args.warmup, B * T))
            torch.manual_seed(0)
            ours = MDNRNNModule(latent_dim=LSIZE, action=action, hidden_size=RSIZE,
                                num_mixtures=K, seq_len=T, shared_mixture=True).train()
            step = trainer(ours, ours.configure_optimizers(), module_loss(ours),
                           ours.hparams.grad_clip)
            times.setdefault(f"M compute {B} x {T} | ours", []).append(
                rate(step, our_batches, args.warmup, B * T))
        print("  ".join(f"{k} {v[-1]:.0f}" for k, v in times.items()), flush=True)
    return times


# ----------------------------------------------------------------------------- CMA-ES


class OneDream(nn.Module):
    """estool's dream env step for one rollout: LSTMCell, Linear head, softmax + multinomial
    per latent dimension, a Bernoulli death; C a linear map of [z, h] to 3 actions."""

    def __init__(self, D: int, H: int):
        super().__init__()
        self.D, self.H = D, H
        self.cell = nn.LSTMCell(D + ASIZE, H)
        self.head = nn.Linear(H, 3 * D * K + 2)
        self.c_weight = nn.Parameter(0.1 * torch.randn(ASIZE, D + H))

    @torch.no_grad()
    def rollout(self, steps: int, tau: float = 1.15) -> None:
        D = self.D
        z, h, c = torch.randn(1, D), torch.zeros(1, self.H), torch.zeros(1, self.H)
        for _ in range(steps):
            a = F.one_hot((self.c_weight @ torch.cat([z, h], 1)[0]).argmax(), ASIZE)
            h, c = self.cell(torch.cat([z, a[None].float()], 1), (h, c))
            y = self.head(h)[0]
            probs = torch.softmax(y[:D * K].view(D, K) / tau, -1)
            k = torch.multinomial(probs, 1)
            mu, log_sigma = y[D * K:2 * D * K].view(D, K), y[2 * D * K:3 * D * K].view(D, K)
            z = (mu.gather(1, k) + log_sigma.gather(1, k).exp() * math.sqrt(tau)
                 * torch.randn(D, 1)).view(1, D)


def _estool_worker(args) -> int:
    D, H, rollouts, steps = args
    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = OneDream(D, H)
    for _ in range(rollouts):
        env.rollout(steps)
    return rollouts * steps


def estool_rate(D: int, H: int, workers: int, rollouts: int, steps: int) -> float:
    """Dream steps/s of ``workers`` processes each running ``rollouts`` one-dream rollouts."""
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_estool_worker, [(D, H, 1, 20)] * workers)  # warm-up
        start = time.perf_counter()
        total = sum(pool.map(_estool_worker, [(D, H, rollouts, steps)] * workers))
        return total / (time.perf_counter() - start)


def batched_rate(D: int, H: int, n: int, steps: int) -> float:
    """Dream steps/s of ``Dream.step`` over ``n`` dreams at once, C in the loop (the step
    ``benchmarks/dream_paper.py`` times, at these sizes)."""
    from dream_paper import controller, immortal_memory, time_ours

    ms = time_ours(immortal_memory(D, H, shared=True), "32", steps, controller(D, H, n // 16), n)
    return n / ms * 1e3


def cmaes_rows(args) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for D, H in ((32, 256), (64, 512)):
            times.setdefault(f"CMA-ES dream steps z {D} LSTM {H} | estool-style", []).append(
                estool_rate(D, H, args.workers, 2, 200))
            times.setdefault(f"CMA-ES dream steps z {D} LSTM {H} | ours", []).append(
                batched_rate(D, H, 1024, 100))
        print("  ".join(f"{k} {v[-1]:.0f}" for k, v in times.items()), flush=True)
    return times


# ----------------------------------------------------------------------------- main


UNITS = {"V": "frames/s", "M": "transitions/s", "CMA-ES": "dream steps/s"}


def table(times: dict[str, list[float]]) -> list[str]:
    lines = ["| measurement | theirs (best) | ours (best) | ours / theirs | all repeats "
             + "(theirs; ours) |", "|---|---:|---:|---:|---|"]
    for name in dict.fromkeys(k.split(" | ")[0] for k in times):
        theirs = next(v for k, v in times.items() if k.startswith(name + " | ") and
                      not k.endswith("| ours"))
        ours = times.get(f"{name} | ours")
        unit = UNITS[name.split()[0]]
        if ours is None:  # a row of theirs alone (ours has no such loop)
            lines.append(f"| {name} ({unit}) | {max(theirs):.0f} | — | — | "
                         f"{', '.join(f'{t:.0f}' for t in theirs)} |")
            continue
        lines.append(f"| {name} ({unit}) | {max(theirs):.0f} | {max(ours):.0f} | "
                     f"{max(ours) / max(theirs):.2f} | {', '.join(f'{t:.0f}' for t in theirs)}"
                     f"; {', '.join(f'{t:.0f}' for t in ours)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", type=Path, required=True,
                    help="A checkout of ctallec/world-models outside this repository.")
    ap.add_argument("--data", help="Rollout store (default: collect 24 episodes).")
    ap.add_argument("--episodes", type=int, default=24,
                    help="Episodes written as npz files for their loaders.")
    ap.add_argument("--steps", type=int, default=30, help="Timed steps per measurement.")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="Interleaved repeats.")
    ap.add_argument("--batch", type=int, default=64, help="V's batch (both sides).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="estool-style worker processes.")
    ap.add_argument("--out", type=Path, default=RESULTS / "peers.md")
    args = ap.parse_args()
    peer = args.peer.resolve()
    if not (peer / "models" / "mdrnn.py").is_file():
        raise SystemExit(f"--peer {peer}: not a ctallec/world-models checkout (no "
                         "models/mdrnn.py); clone it outside this repository")
    if peer == ROOT or ROOT in peer.parents:
        raise SystemExit(f"--peer {peer}: inside this repository; clone it elsewhere")
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(peer))
    from jepa_wm.data import RolloutStore

    load_start = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            from jepa_wm.data.collect import collect

            args.data = str(Path(tmp) / "rollouts")
            collect("VizdoomTakeCover-v1", args.data, episodes=24, seed=0, workers=1,
                    image_size=64, progress=False)
        store = RolloutStore(args.data)
        npz = Path(tmp) / "ctallec"
        files = write_npz(store, npz, args.episodes)
        times = {**vision_rows(peer, store, npz, args), **memory_rows(peer, store, npz, args),
                 **cmaes_rows(args)}
    lines = [
        "# Peers side by side (`benchmarks/peers.py`)", "",
        f"- command: `python benchmarks/peers.py {' '.join(sys.argv[1:])}`",
        (f"- {time.strftime('%Y-%m-%d %H:%M')} UTC; {cpu_name()}, torch {torch.__version__}, "
         f"{args.threads} threads; load {load_start} at the start, {loadavg()} at the end"),
        (f"- peer: ctallec/world-models at {peer} (imported from there); data: "
         f"{store.num_frames} VizDoom take-cover frames in {store.num_episodes} episodes "
         f"({files} npz files for their loaders); {args.steps} timed steps after "
         f"{args.warmup} warm-up, {args.repeats} interleaved repeats"),
        (f"- V: batch {args.batch}; M: LSTM {RSIZE}, z {LSIZE}, K {K}, their shape 16 x 32, "
         "ours 16 x 500; theirs 'with its loader' encodes every batch with their VAE; "
         f"CMA-ES: {args.workers} estool-style processes x 2 rollouts x 200 steps against "
         "1,024 batched dreams x 100 steps"), "",
        *table(times), ""]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
