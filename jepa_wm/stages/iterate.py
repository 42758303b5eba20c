"""``jepa-wm iterate --config ... --vision CKPT --memory CKPT --controller NPZ --latents DIR
--fidelity JSON --out DIR``: the paper's iterative training (``jepa_wm.iterate``):
``iterate.rounds`` rounds of C playing the real game, M learning from it, and a new C
trained in the corrected dream.

Writes what ``evaluate`` reads: ``final.ckpt`` (the last round's M), ``best.npz`` (its C),
``fidelity.json`` (the last M's fidelity figures on the run's held-out episodes) and
``rounds.json`` (per round: C's episodes, its dream fitness and real checks). With
``iterate.rounds: 0`` (the default) these are byte copies of M's, C's and the fidelity
stage's files, so the evaluation is the one-shot pipeline's."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional

from jsonargparse import ArgumentParser, Namespace


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--vision", type=Optional[str], default=None,
                        help="V checkpoint (needed when iterate.rounds > 0).")
    parser.add_argument("--memory", type=str, required=True, help="M checkpoint (final.ckpt).")
    parser.add_argument("--controller", type=str, required=True,
                        help="C trained in M's dream (best.npz).")
    parser.add_argument("--latents", type=str, required=True, help="M's latent set.")
    parser.add_argument("--fidelity", type=Optional[str], default=None,
                        help="M's fidelity.json (copied through when iterate.rounds is 0).")
    parser.add_argument("--out", type=str, required=True, help="Output folder.")
    parser.add_argument("--data", type=Optional[str], default=None,
                        help="Rollout store of the latents (default: the one their "
                             "meta.json names).")


def config_hash(cfg: Namespace) -> str:
    """What the rounds depend on: the stage table's keys, C (which chains M) and the
    fidelity figures it passes on."""
    from jepa_wm.contract import identity
    from jepa_wm.io import sha256_file

    fidelity = sha256_file(cfg.fidelity)[:16] if cfg.fidelity and Path(
        cfg.fidelity).exists() else ""
    return identity("iterate", cfg, upstream=sha256_file(cfg.controller)[:16] + fidelity)


def copy_file(src: str | Path, dst: Path) -> None:
    """Byte copy, atomic (a kill leaves the old file or the new one)."""
    from jepa_wm.io import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def main(cfg: Namespace) -> None:
    from jepa_wm.contract import input_folders
    from jepa_wm.controller import ControllerFile
    from jepa_wm.controller.evaluate import stage_wall_times
    from jepa_wm.data import RolloutStore
    from jepa_wm.io import UserError, claim, is_done, mark_done, write_json
    from jepa_wm.iterate import Models, check_config, memory_episodes, round_summary, run_round
    from jepa_wm.memory import latents_store_path
    from jepa_wm.stages.fidelity import check_settings, measure_memory, summary_line
    from jepa_wm.stages.train_controller import load_parts

    start = time.time()
    ic = cfg.iterate
    check_config(ic)
    if ic.rounds:  # each round's M is measured as the fidelity stage measures
        check_settings(cfg)
    out = Path(cfg.out)
    h = config_hash(cfg)
    if is_done(out, h):
        print(f"iterate: {out} is complete for this config (hash {h}); nothing to do")
        return
    memory, vision, latents, store = load_parts(cfg)
    controller = ControllerFile.load(cfg.controller)
    controller.check_fits(memory, cfg.controller)
    if ic.rounds and vision is None:
        raise UserError("iterate.rounds > 0: C plays the real game; give --vision CKPT")
    if cfg.fidelity and not Path(cfg.fidelity).exists():
        raise UserError(f"{cfg.fidelity}: not found; run `jepa-wm fidelity` first, or leave "
                        "--fidelity out")
    train_eps, val_eps = memory_episodes(cfg, memory, cfg.memory, store) if ic.rounds \
        else (None, None)
    claim(out, h, "iterate")
    prev = Models(memory, Path(cfg.memory), controller)
    stores, sets, times, rounds = [store], [latents], {}, []
    for k in range(1, ic.rounds + 1):
        folder = out / f"round-{k}"
        prev = run_round(cfg, k, vision, Path(cfg.vision), prev, stores, sets, train_eps,
                         val_eps, latents, store, folder, times)
        rounds.append({"round": k, **round_summary(folder, RolloutStore(folder / "data"))})
        print(f"iterate: round {k}: C played {rounds[-1]['episodes']} episodes (length "
              f"{rounds[-1]['length_mean']:.0f}), new C's dream fitness "
              f"{rounds[-1]['dream_fitness']:.0f}, real checks {rounds[-1]['real_checks']}")
    copy_file(prev.memory_path, out / "final.ckpt")
    copy_file(cfg.controller if not ic.rounds else out / f"round-{ic.rounds}" / "controller"
              / "best.npz", out / "best.npz")
    if ic.rounds:
        figures = measure_memory(cfg, prev.memory, latents, store, val_eps,
                                 prev.memory_path.parent / "metrics.json")
        write_json(out / "fidelity.json", figures)
        print("iterate: last M's fidelity: " + summary_line(figures))
    elif cfg.fidelity:
        copy_file(cfg.fidelity, out / "fidelity.json")
    write_json(out / "rounds.json", rounds)
    flags = {flag: getattr(cfg, flag, None) for flag in ("vision", "memory", "controller",
                                                           "latents", "fidelity")}
    flags["data"] = latents_store_path(latents, cfg.data)
    inputs = stage_wall_times(input_folders("iterate", flags))
    mark_done(out, h, wall_time=time.time() - start, rounds=ic.rounds,
              step_wall_time=times, input_wall_time=inputs)
    if ic.rounds:
        print(f"iterate: {ic.rounds} round(s) done -> {out}/best.npz")
