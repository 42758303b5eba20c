"""CLI glue: one module per stage with ``add_arguments(parser)`` and ``main(cfg)``.

``build_parser`` lives here (not in ``cli.py``) so that the pipeline can build any stage's
parser without importing the CLI; the commands and their help are ``jepa_wm.contract``'s.
"""

from __future__ import annotations

import importlib

from jepa_wm.contract import COMMANDS


def stage_module(stage: str):
    """The module ``jepa_wm.stages.<stage>`` (``train-vision`` -> ``train_vision``)."""
    return importlib.import_module(f"jepa_wm.stages.{stage.replace('-', '_')}")


def build_parser(stage: str):
    """The full parser of one stage: the experiment schema plus the stage's own flags.

    Returns ``(parser, module)``.
    """
    from jepa_wm.config import experiment_parser

    module = stage_module(stage)
    parser = experiment_parser(prog=f"jepa-wm {stage}", description=COMMANDS[stage])
    module.add_arguments(parser)
    return parser, module
