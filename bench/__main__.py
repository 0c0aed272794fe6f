"""`python -m bench [N ...] [--quick] [--profile DIR] [--json PATH]`

Runs the benchmarks (1-8 of issue 4, 9 of issue 7, 10 of issue 9, 11 of issue 10,
12 of issue 11, 13-18 of issue 12: all, or the numbers given), prints a table row as each one
finishes and the whole table at the end. Progress goes to stderr.
Exit status: 0 when every benchmark could be measured (targets missed or
not; the table says), 1 when one could not or a correctness check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from . import driver
from .benchmarks import BENCHMARKS, Config
from .driver import BenchError, Row, format_table, log, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="pullrun benchmarks against the docker CLI"
    )
    parser.add_argument("numbers", nargs="*", metavar="N", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the server with py-spy into DIR/<benchmark>.txt",
    )
    parser.add_argument(
        "--server-root",
        type=Path,
        metavar="DIR",
        help="run the server from this source tree (e.g. `git archive` of another commit)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--markdown", action="store_true", help="print the final table as markdown")
    args = parser.parse_args(argv)
    unknown = [n for n in args.numbers if n not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)} (there are {', '.join(BENCHMARKS)})")
    numbers = args.numbers or list(BENCHMARKS)
    cfg = Config(quick=args.quick, profile=args.profile)
    if args.server_root is not None:
        driver.SERVER_ROOT = args.server_root.resolve()
        log(f"server from {driver.SERVER_ROOT}")

    info = machine()
    log("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    rows: list[Row] = []
    failed = False
    started = time.monotonic()
    for number in numbers:
        t0 = time.monotonic()
        log(f"benchmark {number}: {BENCHMARKS[number].__name__}")
        try:
            new = BENCHMARKS[number](cfg)
        except (BenchError, OSError, RuntimeError, AssertionError) as exc:
            if not isinstance(exc, BenchError):
                traceback.print_exc()
            failed = True
            new = [
                Row(
                    number,
                    f"{BENCHMARKS[number].__name__}: ERROR {exc}"[:200],
                    "-",
                    "-",
                    "-",
                    "-",
                    False,
                )
            ]
        for row in new:
            print(format_table([row]).splitlines()[-1], flush=True)
        log(f"benchmark {number}: {time.monotonic() - t0:.0f} s")
        rows.extend(new)

    total = time.monotonic() - started
    print()
    print(format_table(rows, markdown=args.markdown))
    missed = [r for r in rows if not r.passed]
    print(
        f"\n{len(rows) - len(missed)} of {len(rows)} targets met"
        f"{' (quick mode)' if args.quick else ''}; {total:.0f} s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "quick": args.quick,
                    "seconds": total,
                    "rows": [r.__dict__ for r in rows],
                },
                indent=1,
                default=str,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
