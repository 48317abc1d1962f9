"""Turning rounds into medians and ratios, and writing ``report.json`` and ``report.md``."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import LoadResult
from bench.scenarios import Scenario

CLIENT_BOUND_PCT = 90.0


@dataclass
class RoundResult:
    index: int
    first: str  # "gateway" or "reference": which ran first in this round
    gateway: LoadResult
    reference: LoadResult


@dataclass
class ScenarioResult:
    scenario: Scenario
    rounds: list[RoundResult] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def _side(results: Sequence[LoadResult], server: str) -> dict[str, float]:
    """Medians over rounds for one side; ``server`` names its process in the CPU samples."""
    return {
        "requests_per_s": round(_median([r.rps for r in results]), 1),
        "server_cpu_ms_per_request": round(
            _median([r.cpu_ms_per_request(server) for r in results]), 3
        ),
        "p50_ms": round(_median([r.percentile(50) for r in results]), 3),
        "p99_ms": round(_median([r.percentile(99) for r in results]), 3),
        "errors": sum(r.errors for r in results),
        "generator_cpu_pct": round(_median([r.generator_cpu_pct for r in results]), 1),
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def _warnings(result: ScenarioResult) -> list[str]:
    found: list[str] = []
    by_status = result.facts.get("jobs_by_status")
    if isinstance(by_status, dict) and set(by_status) - {"completed"}:
        found.append(f"not every prepared job completed: {by_status}")
    for r in result.rounds:
        for name, load in (("gateway", r.gateway), ("reference", r.reference)):
            if load.errors:
                found.append(
                    f"round {r.index} {name}: {load.errors} unexpected answers "
                    f"{dict(load.statuses)}"
                )
            if load.generator_cpu_pct >= CLIENT_BOUND_PCT:
                found.append(
                    f"round {r.index} {name}: load generator at {load.generator_cpu_pct:.0f}% "
                    "of its core; the figure is a lower bound (client-bound)"
                )
    return found


def summarise(result: ScenarioResult) -> dict[str, object]:
    """Medians over rounds, the gateway/reference ratios and the targets."""
    scenario = result.scenario
    gateway = _side([r.gateway for r in result.rounds], "api")
    reference = _side([r.reference for r in result.rounds], "reference")
    per_round = [_ratio(r.gateway.rps, r.reference.rps) for r in result.rounds]
    ratio = round(_median(per_round), 3)
    return {
        "id": scenario.id,
        "title": scenario.title,
        "gateway": gateway,
        "reference": reference,
        "ratio_rps": ratio,
        "ratio_rps_per_round": per_round,
        "ratio_rps_of_medians": _ratio(gateway["requests_per_s"], reference["requests_per_s"]),
        "ratio_p50": _ratio(gateway["p50_ms"], reference["p50_ms"]),
        "ratio_cpu_per_request": _ratio(
            gateway["server_cpu_ms_per_request"], reference["server_cpu_ms_per_request"]
        ),
        "ratio_p99": _ratio(gateway["p99_ms"], reference["p99_ms"]),
        "targets": {
            "ratio_rps": scenario.target_ratio,
            "p99_ms": scenario.target_p99_ms,
            "ratio_met": ratio >= scenario.target_ratio,
            "p99_met": gateway["p99_ms"] <= scenario.target_p99_ms,
        },
        "facts": result.facts,
        "warnings": _warnings(result),
        "rounds": [
            {
                "round": r.index,
                "first": r.first,
                "gateway": r.gateway.summary(),
                "reference": r.reference.summary(),
            }
            for r in result.rounds
        ],
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.3g}" if value < 10 else f"{value:,.1f}"
    return str(value)


def _scenario_markdown(summary: dict[str, object]) -> list[str]:
    gw = summary["gateway"]
    ref = summary["reference"]
    targets = summary["targets"]
    assert isinstance(gw, dict) and isinstance(ref, dict) and isinstance(targets, dict)
    met = {True: "met", False: "**missed**"}
    lines = [
        f"## {summary['id']}: {summary['title']}",
        "",
        "| | gateway | reference | gateway / reference |",
        "|---|---:|---:|---:|",
        f"| requests/s (median) | {_fmt(gw['requests_per_s'])} | {_fmt(ref['requests_per_s'])} "
        f"| **{_fmt(summary['ratio_rps'])}** (target ≥ {targets['ratio_rps']}: "
        f"{met[bool(targets['ratio_met'])]}) |",
        f"| p50 ms (median) | {_fmt(gw['p50_ms'])} | {_fmt(ref['p50_ms'])} "
        f"| {_fmt(summary['ratio_p50'])} |",
        f"| p99 ms (median) | {_fmt(gw['p99_ms'])} | {_fmt(ref['p99_ms'])} "
        f"| {_fmt(summary['ratio_p99'])} (gateway target ≤ {targets['p99_ms']} ms: "
        f"{met[bool(targets['p99_met'])]}) |",
        f"| server CPU ms per request (median) | {_fmt(gw['server_cpu_ms_per_request'])} "
        f"| {_fmt(ref['server_cpu_ms_per_request'])} | {_fmt(summary['ratio_cpu_per_request'])} |",
        f"| unexpected answers | {gw['errors']} | {ref['errors']} | |",
        f"| load generator CPU % (median) | {_fmt(gw['generator_cpu_pct'])} "
        f"| {_fmt(ref['generator_cpu_pct'])} | |",
        "",
        f"Per-round ratios: {summary['ratio_rps_per_round']}; "
        f"ratio of medians: {summary['ratio_rps_of_medians']}.",
        "",
        "| round | first | gateway req/s | p50 | p99 | server CPU % | reference req/s | p50 "
        "| p99 | server CPU % |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    rounds = summary["rounds"]
    assert isinstance(rounds, list)
    for r in rounds:
        g, f = r["gateway"], r["reference"]
        lines.append(
            f"| {r['round']} | {r['first']} | {_fmt(g['requests_per_s'])} | {_fmt(g['p50_ms'])} "
            f"| {_fmt(g['p99_ms'])} | {_cpu(g)} | {_fmt(f['requests_per_s'])} "
            f"| {_fmt(f['p50_ms'])} | {_fmt(f['p99_ms'])} | {_cpu(f)} |"
        )
    lines += ["", "Facts: " + json.dumps(summary["facts"], sort_keys=True), ""]
    warnings = summary["warnings"]
    assert isinstance(warnings, list)
    lines += [f"- warning: {w}" for w in warnings]
    return [*lines, ""] if warnings else lines


def _cpu(side: dict[str, object]) -> str:
    cpu = side.get("server_cpu_pct")
    if not isinstance(cpu, dict) or not cpu:
        return ""
    return ", ".join(f"{name} {value:.0f}" for name, value in cpu.items())


def markdown(report: dict[str, object]) -> str:
    options = report["options"]
    machine = report["machine"]
    assert isinstance(options, dict) and isinstance(machine, dict)
    lines = [
        "# imagegate benchmark report",
        "",
        f"Measured {machine['measured_at']} on {machine['cpu_model']} "
        f"({machine['logical_cpus']} logical CPUs, load average at start "
        f"{machine['load_average_start']}, at end {report.get('load_average_end')}); "
        f"commit {machine.get('git_commit')}.",
        "",
        f"Options: {json.dumps(options, sort_keys=True)}. Placement: "
        f"{json.dumps(report['placement'], sort_keys=True)}. Extra gateway settings: "
        f"{json.dumps(report.get('gateway_env') or {}, sort_keys=True)}.",
        "",
        "Figures are medians over rounds; gateway and reference run back to back in each round "
        "(alternating which goes first), so ratios are the figures to read on this noisy machine. "
        "Server CPU ms per request counts CPU time, not wall time: it holds up best when other "
        "work shares the cores.",
        "",
    ]
    scenarios = report["scenarios"]
    assert isinstance(scenarios, list)
    for summary in scenarios:
        lines += _scenario_markdown(summary)
    lines += ["## Machine", "", "```json", json.dumps(machine, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _clean(value: object) -> object:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_reports(report: dict[str, object], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    md_path = directory / "report.md"
    json_path.write_text(json.dumps(_clean(report), indent=2, default=str) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
