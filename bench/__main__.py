"""``python -m bench``: run scenarios B1/B2 with their references and write the reports.

B6 (cost routing, ``bench.scenarios_b6``) measures no throughput against a reference: it runs
after the others and writes its own ``b6.json`` / ``b6.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from bench.runner import Options, Stopped, run_with_guards
from bench.scenarios import SCENARIOS
from bench.scenarios_b6 import SCENARIO_ID as B6
from bench.scenarios_b6 import B6Options, run_from_cli

REPORTS = Path(__file__).resolve().parent / "reports"


def _scenarios(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip().upper() for s in value.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SCENARIOS and s != B6]
    if unknown or not chosen:
        known = ",".join([*SCENARIOS, B6])
        raise argparse.ArgumentTypeError(f"unknown scenarios {unknown}; known: {known}")
    return chosen


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _setting(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name.startswith("IMAGEGATE_"):
        raise argparse.ArgumentTypeError(f"expected IMAGEGATE_NAME=value, got {value!r}")
    return name, setting


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway against a minimal FastAPI reference (B1, B2).",
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=(*SCENARIOS, B6),
        help="comma-separated scenario ids (default: B1,B2,B6)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=10.0,
        help="measured seconds per round and server (default 10)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=3,
        help="rounds per scenario; figures are medians (default 3)",
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, default=32, help="concurrent clients (default 32)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="unmeasured seconds before each measured window (default 2)",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=19,
        help="niceness of the gateway worker on the server core during B1 "
        "(default 19: it uses what the API leaves; 0: it competes)",
    )
    parser.add_argument(
        "--output", type=Path, default=REPORTS, help="report directory (default bench/reports)"
    )
    parser.add_argument(
        "--gateway-env",
        type=_setting,
        action="append",
        default=[],
        metavar="IMAGEGATE_NAME=VALUE",
        help="extra gateway setting (repeatable), e.g. IMAGEGATE_DB_POOL_SIZE=32",
    )
    args = parser.parse_args(argv)
    return Options(
        scenarios=args.scenarios,
        duration_s=args.duration,
        rounds=args.rounds,
        concurrency=args.concurrency,
        warmup_s=max(0.0, args.warmup),
        worker_nice=args.worker_nice,
        output=args.output,
        gateway_env=tuple(args.gateway_env),
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    load = tuple(s for s in options.scenarios if s != B6)
    code = _run_load_scenarios(dataclasses.replace(options, scenarios=load)) if load else 0
    if B6 in options.scenarios and code == 0:
        code = run_from_cli(B6Options(output=options.output))
    return code


def _run_load_scenarios(options: Options) -> int:
    try:
        report = run_with_guards(options)
    except Stopped as exc:
        print(f"stopped ({exc}); every process it started is stopped", file=sys.stderr)
        return 130
    print(f"reports: {options.output / 'report.json'}, {options.output / 'report.md'}")
    summaries = report["scenarios"]
    assert isinstance(summaries, list)
    for summary in summaries:
        print(f"{summary['id']}: gateway/reference req/s = {summary['ratio_rps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
