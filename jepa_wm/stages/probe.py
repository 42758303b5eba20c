"""``jepa-wm probe --config ... --latents DIR --out DIR [--data STORE]``: linear probes of
what V's latents know about the game (``jepa_wm.probes``), fitted on the training episodes
and scored on the episodes V held out. Writes ``probes.json`` (per target: R², accuracy or average precision,
frames, ridge strength) and logs ``probe_<target>`` to W&B.

A VizDoom store collected before game state was recorded gets it first, once, by replaying
its episodes (``jepa_wm.data.replay``: every frame checked; the store's identity, and so V,
the latents and M, unchanged). A store from an env without game state gets a
``probes.json`` that says so and no scores: the run goes on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--latents", type=str, required=True, help="Latent set (encode's out).")
    parser.add_argument("--out", type=str, required=True, help="Output folder.")
    parser.add_argument("--data", type=Optional[str], default=None,
                        help="Rollout store of the latents (default: the one their "
                             "meta.json names).")


def config_hash(cfg: Namespace) -> str:
    """What the probes depend on: the held-out split (V's) and the latent set."""
    from jepa_wm.contract import identity
    from jepa_wm.stages.train_memory import upstream_hash

    return identity("probe", cfg, upstream=upstream_hash(cfg.latents))


def summary_line(result: dict) -> str:
    if result.get("skipped"):
        return f"no probes ({result['skipped']})"
    parts = []
    for name, p in result["targets"].items():
        if "score" not in p:
            parts.append(f"{name} skipped")
        elif p["metric"] == "accuracy":
            parts.append(f"{name} acc {p['score']:.3f} (majority {p['base']:.3f})")
        elif p["metric"] == "average_precision":
            parts.append(f"{name} AP {p['score']:.3f} (chance {p['base']:.3f})")
        else:
            parts.append(f"{name} R² {p['score']:.3f}")
    return ", ".join(parts)


def _add_state(store, workers: int):
    """The store with its game state added by replay (under the store's lock: two variants
    probing one store take turns, the second finds it done)."""
    from jepa_wm.data import RolloutStore
    from jepa_wm.data.replay import add_game_state
    from jepa_wm.pipeline import file_lock

    print(f"probe: {store.root} has no game state; replaying its "
          f"{store.num_episodes} episodes to read it (once per store)", flush=True)
    with file_lock(store.root / ".replay.lock"):
        add_game_state(store.root, workers=workers)
    return RolloutStore(store.root)


def main(cfg: Namespace) -> None:
    import numpy as np

    from jepa_wm.data import RolloutStore
    from jepa_wm.data.datasets import split_episodes
    from jepa_wm.data.latents import LatentSet, latents_store_path
    from jepa_wm.io import UserError, claim, is_done, mark_done, write_json
    from jepa_wm.probes import flat_scores, probe
    from jepa_wm.tracking import wandb_run

    start = time.time()
    out = Path(cfg.out)
    latents = LatentSet(cfg.latents)
    store = RolloutStore(latents_store_path(latents, cfg.data))
    if latents.frames != store.num_frames:
        raise UserError(f"{cfg.latents}: holds {latents.frames} frames, {store.root} "
                        f"{store.num_frames}; encode this store again")
    h = config_hash(cfg)
    if is_done(out, h) and (out / "probes.json").exists():
        print(f"probe: {out} is complete for this config (hash {h}); nothing to do")
        return
    claim(out, h, "probe")  # (after every input check: bad input moves nothing)
    if not store.state_names and str(store.meta["env_id"]).startswith("Vizdoom"):
        store = _add_state(store, cfg.workers)
    if not store.state_names:
        result = {"skipped": f"{store.root} records no game state (collected before it was "
                             "recorded, or its env has none); recollect to probe"}
    else:
        train_eps, _ = split_episodes(store, max(cfg.vision_train.val_fraction, 1e-9),
                                      cfg.seed)
        episode = store.episode_of(np.arange(store.num_frames))
        train = np.isin(episode, train_eps)
        # the ridge strength is chosen on the last fifth of the training episodes
        inner = np.isin(episode, train_eps[int(0.8 * len(train_eps)):])
        state = store.get("state", slice(None))
        targets = probe(np.asarray(latents.z), state, store.state_names, train, inner,
                        terminated=store.terminated(slice(None)))
        result = {"targets": targets, "scores": flat_scores(targets),
                  "train_episodes": len(train_eps),
                  "test_episodes": int(store.num_episodes - len(train_eps))}
    result["wall_time"] = time.time() - start
    write_json(out / "probes.json", result)
    run = wandb_run(cfg, "probe", out)
    try:
        run.summary.update(result.get("scores", {}))
    finally:
        run.finish()
    mark_done(out, h, wall_time=result["wall_time"])
    print("probe: " + summary_line(result))
