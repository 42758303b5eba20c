"""CLI glue: one module per stage with ``add_arguments(parser)`` and ``main(cfg)``.

``STAGES`` and ``build_parser`` live here (not in ``cli.py``) so that the pipeline can
build any stage's parser without importing the CLI.
"""

from __future__ import annotations

import importlib

STAGES = {
    "collect": "Collect episodes of a real env into a rollout store.",
    "inspect": "Print a rollout store's summary and verify every shard's checksum.",
    "train-vision": "Train a vision model V (VAE, JEPA or random) on a rollout store.",
    "encode": "Encode every stored frame with a trained V into a latent set.",
    "train-memory": "Train the MDN-RNN M on a latent set.",
    "fidelity": "Measure how faithful M's dream is on held-out episodes (before CMA-ES).",
    "train-controller": "Train the linear controller C with CMA-ES in the dream or the real env.",
    "evaluate": "Evaluate C in the real env and in the dream; write results.json.",
    "run": "Run every stage of one variant and seed, skipping what is done.",
    "sweep": "Run a grid of variants x seeds and write its report.",
    "report": "Tabulate and plot finished runs of an experiment.",
}


def stage_module(stage: str):
    """The module ``jepa_wm.stages.<stage>`` (``train-vision`` -> ``train_vision``)."""
    return importlib.import_module(f"jepa_wm.stages.{stage.replace('-', '_')}")


def build_parser(stage: str):
    """The full parser of one stage: the experiment schema plus the stage's own flags.

    Returns ``(parser, module)``.
    """
    from jepa_wm.config import experiment_parser

    module = stage_module(stage)
    parser = experiment_parser(prog=f"jepa-wm {stage}", description=STAGES[stage])
    module.add_arguments(parser)
    return parser, module
