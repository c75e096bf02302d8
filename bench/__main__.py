"""``python -m bench [--quick] [--only SCENARIO ...] [--json]``: run, print the table."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import (calendars, calls, endtoend, failover, fanout, hostile, machine, nodes, parsing,
               resync, sessions, teams)
from .report import Row, table

#: name -> run(quick); in the order they run.
SCENARIOS: dict[str, Callable[[bool], Any]] = {
    "parsing": parsing.run,
    "e2e": endtoend.run,
    "resync": resync.run,
    "fanout": fanout.run,
    "calendars": calendars.run,
    "failover": failover.run,
    "nodes": nodes.run,
    "hostile": hostile.run,
    "calls": calls.run,
    "sessions": sessions.run,
    "teams": teams.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="astpresence benchmarks: AMI parsing, end to end, resync, fan-out, "
                    "calendars, HA failover, several Asterisk servers, hostile input. "
                    "Figures with a natural baseline are also shown as a ratio to it, "
                    "measured in the same run. See bench/README.md.",
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes, a few seconds per scenario (CI: checks that each "
                        "scenario runs and yields numbers; targets are not meaningful)")
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO",
                   help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout instead of the table")
    return p.parse_args(argv)


def run_one(name: str, quick: bool) -> list[Row]:
    result = SCENARIOS[name](quick)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    rows: list[Row] = result
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in SCENARIOS if not args.only or n in args.only]
    info = machine.info()
    report: dict[str, Any] = {"machine": info, "quick": args.quick, "scenarios": {}}
    rows: list[Row] = []
    failed = False
    if not args.json:
        print(machine.describe(info))
        print(f"Mode: {'quick (small sizes; targets do not apply)' if args.quick else 'full'}")
        print()
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            got = run_one(name, args.quick)
        except Exception as exc:  # report it, run the others
            failed = True
            traceback.print_exc()
            report["scenarios"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                         "seconds": time.monotonic() - started}
            continue
        elapsed = time.monotonic() - started
        print(f"[bench] {name}: {elapsed:.1f} s", file=sys.stderr, flush=True)
        if args.quick:
            for r in got:  # small sizes: a verdict against the targets would mean nothing
                r.ok = None
        report["scenarios"][name] = {"ok": True, "seconds": elapsed,
                                     "rows": [r.to_json() for r in got]}
        rows += got
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    else:
        print(table(rows))
        for name, sc in report["scenarios"].items():
            if not sc["ok"]:
                print(f"\n{name}: FAILED: {sc['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
