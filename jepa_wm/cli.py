"""``jepa-wm <stage> ...``: one subcommand per pipeline stage.

Each stage lives in ``jepa_wm.stages.<name>`` with ``add_arguments(parser)`` (its own
flags on top of the shared experiment schema) and ``main(cfg)``. Only the chosen stage is
imported, so ``jepa-wm collect`` does not pay for Lightning's import.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from jepa_wm.contract import COMMANDS
from jepa_wm.stages import build_parser

#: File-system errors that are the user's to fix, with what to do about them.
FILE_ERRORS = {
    errno.ENOSPC: "no space left on device; free some space (completed files are kept) "
                  "and run the command again",
    errno.EDQUOT: "disk quota exceeded; free some space (completed files are kept) and run "
                  "the command again",
    errno.ENOENT: "not found; give the path of an existing file or folder",
    errno.ENOTDIR: "a file where a folder is expected; give a folder",
    errno.EISDIR: "a folder where a file is expected; give a file",
    errno.EEXIST: "exists and is not a folder; give a folder",
    errno.EACCES: "permission denied; give a path you can read and write",
    errno.EROFS: "read-only file system; give a writable path",
}


def _usage() -> str:
    rows = "\n".join(f"  {name:<18} {doc}" for name, doc in COMMANDS.items())
    return ("usage: jepa-wm <stage> [--config FILE ...] [options] [--debug]\n\nstages:\n" + rows +
            "\n\n`jepa-wm <stage> --help` lists a stage's options; "
            "`--print_config` shows the resolved config.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in COMMANDS:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    # --debug is the CLI's own flag (tracebacks on errors), not part of the config
    debug = "--debug" in rest or os.environ.get("JEPA_WM_DEBUG") == "1"
    rest = [a for a in rest if a != "--debug"]
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
        if isinstance(e, OSError) and e.errno in FILE_ERRORS:
            # the user's to fix (writers are atomic: nothing is left half-written)
            print(f"error: {stage}: {e.filename or 'a file'}: {FILE_ERRORS[e.errno]}",
                  file=sys.stderr)
            return 2
        msg = " ".join(str(e).split())[:500]
        print(f"error: {stage}: {type(e).__name__}: {msg} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
