"""The bad-input catalogue (``tests/fault_cases.py``) run whole, its table recorded in
``benchmarks/results/faults.md``.

    python benchmarks/faults.py            # every case
    python benchmarks/faults.py --quick    # the cases that need no M or C (a check, ~30 s)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the catalogue lives beside the tests that run it
from common import results_path
from fault_cases import CASES, make_ctx, run_case, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="only the cases that need no M or C (no CLI stages trained)")
    parser.add_argument("--out", type=Path, default=None,
                        help="Results file (default results/faults.md; --quick: "
                             "faults_quick.md).")
    args = parser.parse_args()
    args.out = results_path("faults", args.quick, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ctx = make_ctx(Path(tmp) / "work", memory=not args.quick)
        print(f"work folder built in {time.perf_counter() - t0:.1f} s")
        outcomes = []
        for case in CASES:
            if case.needs_memory and args.quick:
                continue
            o = run_case(case, ctx)
            outcomes.append(o)
            status = "ok " if not o.problems() else "BAD"
            print(f"{status} {case.name:<26} exit {o.exit_code}  {o.error_line[:110]}")
            for p in o.problems():
                print(f"      {p}")
        write_results(outcomes, ctx, args.quick, args.out)
    failed = sum(bool(o.problems()) for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} cases pass; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
