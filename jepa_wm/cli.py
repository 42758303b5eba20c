"""``jepa-wm <stage> ...``: one subcommand per pipeline stage.

Each stage lives in ``jepa_wm.stages.<name>`` with ``add_arguments(parser)`` (its own
flags on top of the shared experiment schema) and ``main(cfg)``. Only the chosen stage is
imported, so ``jepa-wm collect`` does not pay for Lightning's import.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

STAGES = {
    "collect": "Collect episodes of a real env into a rollout store.",
    "inspect": "Print a rollout store's summary and verify every shard's checksum.",
    "train-vision": "Train a vision model V (VAE, JEPA or random) on a rollout store.",
    "encode": "Encode every stored frame with a trained V into a latent set.",
    "train-memory": "Train the MDN-RNN M on a latent set.",
    "train-controller": "Train the linear controller C with CMA-ES in the dream or the real env.",
    "evaluate": "Evaluate C in the real env and in the dream; write results.json.",
    "run": "Run every stage of one variant and seed, skipping what is done.",
    "sweep": "Run a grid of variants x seeds and write its report.",
    "report": "Tabulate and plot finished runs of an experiment.",
}


def _usage() -> str:
    rows = "\n".join(f"  {name:<18} {doc}" for name, doc in STAGES.items())
    return ("usage: jepa-wm <stage> [--config FILE ...] [options]\n\nstages:\n" + rows +
            "\n\n`jepa-wm <stage> --help` lists a stage's options; "
            "`--print_config` shows the resolved config.")


def _stage_module(stage: str):
    return importlib.import_module(f"jepa_wm.stages.{stage.replace('-', '_')}")


def build_parser(stage: str):
    """The full parser of one stage: the experiment schema plus the stage's own flags."""
    from jepa_wm.config import experiment_parser

    module = _stage_module(stage)
    parser = experiment_parser(prog=f"jepa-wm {stage}", description=STAGES[stage])
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(STAGES)}",
              file=sys.stderr)
        return 2
    debug = "--debug" in rest or os.environ.get("JEPA_WM_DEBUG") == "1"
    from jepa_wm.io import UserError

    try:
        parser, module = build_parser(stage)
        cfg = parser.parse_args(rest)
        module.main(cfg)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, argparse.ArgumentError) as e:
        if debug:
            traceback.print_exc()
        msg = " ".join(str(e).split())
        print(f"error: {stage}: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # an unexpected failure: one line unless --debug
        if debug:
            raise
        msg = " ".join(str(e).split())[:500]
        print(f"error: {stage}: {type(e).__name__}: {msg} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
