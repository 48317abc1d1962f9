"""One benchmark run: the reference, then each scenario on a fresh gateway, then the report.

Placement: the gateway (API, worker) and the reference on one core, the load generator (this
process) on another. Everything it starts is stopped by pid on the way out, also on Ctrl-C,
SIGTERM or when the run's time budget is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.load import CpuProbe, LoadResult, Workload, run_load
from bench.machine import load_average, machine_facts
from bench.procs import Proc, ProcessGroup, cpu_count, free_port, pin_self, wait_http_ready
from bench.report import RoundResult, ScenarioResult, summarise, write_reports
from bench.scenarios import SCENARIOS, Prepared, Scenario
from bench.stack import HOST, Gateway, GatewaySetup, gateway_stack, pg_fetch

PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class Options:
    scenarios: tuple[str, ...]
    duration_s: float
    rounds: int
    concurrency: int
    warmup_s: float
    worker_nice: int
    output: Path
    gateway_env: tuple[tuple[str, str], ...] = ()

    def budget_s(self) -> float:
        """An upper bound for the whole run; past it the run is cancelled and cleaned up."""
        per_round = 2 * (self.warmup_s + self.duration_s + PAUSE_S + 35)
        return 120 + len(self.scenarios) * (300 + self.rounds * per_round)


@dataclass(frozen=True, slots=True)
class Cores:
    server: int | None
    generator: int | None


def choose_cores() -> Cores:
    """Server on core 0 and generator on core 1 when there are two; no pinning otherwise."""
    if cpu_count() < 2:
        return Cores(None, None)
    return Cores(0, 1)


async def start_reference(procs: ProcessGroup, core: int | None) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.reference_app", "--host", HOST, "--port", str(port)]
    proc = procs.start("reference", argv, _reference_env(), core=core, cwd=_root())
    url = f"http://{HOST}:{port}"
    await wait_http_ready(proc, url + "/healthz")
    return proc, url


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


def _reference_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}


def _probe(gateway: Gateway, reference: Proc) -> CpuProbe:
    def probe() -> dict[str, float]:
        return {**gateway.cpu_seconds(), "reference": reference.cpu_seconds()}

    return probe


async def _measure(url: str, workload: Workload, probe: CpuProbe, options: Options) -> LoadResult:
    return await run_load(
        url,
        workload,
        concurrency=options.concurrency,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        cpu_probe=probe,
    )


async def run_round(
    index: int,
    gateway: Gateway,
    prepared: Prepared,
    reference: tuple[Proc, str],
    options: Options,
) -> RoundResult:
    """Gateway and reference back to back; odd rounds start with the gateway."""
    probe = _probe(gateway, reference[0])
    first = "gateway" if index % 2 else "reference"
    runs = {
        "gateway": (gateway.base_url, prepared.gateway),
        "reference": (reference[1], prepared.reference),
    }
    order = [first, "reference" if first == "gateway" else "gateway"]
    results: dict[str, LoadResult] = {}
    for name in order:
        url, workload = runs[name]
        results[name] = await _measure(url, workload, probe, options)
        print(f"  round {index} {name}: {_line(results[name])}", flush=True)
        await asyncio.sleep(PAUSE_S)
    return RoundResult(index, first, results["gateway"], results["reference"])


def _line(result: LoadResult) -> str:
    return (
        f"{result.rps:,.0f} req/s, p50 {result.percentile(50):.2f} ms, "
        f"p99 {result.percentile(99):.2f} ms, errors {result.errors}, "
        f"client CPU {result.generator_cpu_pct:.0f}%"
    )


async def _jobs_by_status(database: str) -> dict[str, int]:
    """Informational: how far the worker got with the jobs the run created."""
    with contextlib.suppress(Exception):
        rows = await pg_fetch("SELECT status, count(*) FROM jobs GROUP BY status", database)
        return {str(status): int(str(count)) for status, count in rows}
    return {}


async def _pg_sessions(database: str) -> int | None:
    """PostgreSQL's count of sessions ever opened on the database (15+): a pool that keeps
    opening connections under steady load shows here."""
    with contextlib.suppress(Exception):
        rows = await pg_fetch(f"SELECT sessions FROM pg_stat_database WHERE datname = '{database}'")
        return int(str(rows[0][0]))
    return None


async def _after_facts(gateway: Gateway) -> dict[str, object]:
    facts: dict[str, object] = {"api_rss_mb": gateway.api.rss_mb()}
    if gateway.worker is not None:
        facts["worker_rss_mb"] = gateway.worker.rss_mb()
        facts["worker_cpu_s"] = round(gateway.worker.cpu_seconds(), 1)
    facts["api_cpu_s"] = round(gateway.api.cpu_seconds(), 1)
    facts["jobs_in_database_by_status"] = await _jobs_by_status(gateway.database)
    return facts


async def run_scenario(
    scenario: Scenario,
    procs: ProcessGroup,
    reference: tuple[Proc, str],
    work_dir: Path,
    setup: GatewaySetup,
    options: Options,
) -> ScenarioResult:
    print(f"{scenario.id}: {scenario.title}", flush=True)
    name = scenario.id.lower()
    async with gateway_stack(name, procs, work_dir, setup) as gateway:
        print(f"  gateway ready at {gateway.base_url} (database {gateway.database})", flush=True)
        prepared = await scenario.prepare(gateway)
        print(f"  prepared: {prepared.facts}", flush=True)
        result = ScenarioResult(scenario, facts=dict(prepared.facts))
        sessions_before = await _pg_sessions(gateway.database)
        for index in range(1, options.rounds + 1):
            result.rounds.append(await run_round(index, gateway, prepared, reference, options))
        result.facts.update(await _after_facts(gateway))
        sessions_after = await _pg_sessions(gateway.database)
        if sessions_before is not None and sessions_after is not None:
            result.facts["pg_connections_opened_during_rounds"] = sessions_after - sessions_before
        result.facts["reference_rss_mb"] = reference[0].rss_mb()
    return result


async def run(options: Options) -> dict[str, object]:
    """The whole run; returns the report (also written to ``options.output``)."""
    cores = choose_cores()
    pinned = pin_self(cores.generator)
    logs = options.output / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    procs = ProcessGroup(logs)
    work_dir = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    setup = GatewaySetup(cores.server, options.worker_nice, options.gateway_env)
    machine = await machine_facts()
    summaries: list[dict[str, object]] = []
    try:
        reference = await start_reference(procs, cores.server)
        for scenario_id in options.scenarios:
            result = await run_scenario(
                SCENARIOS[scenario_id], procs, reference, work_dir, setup, options
            )
            summaries.append(summarise(result))
    finally:
        procs.stop_all()
        shutil.rmtree(work_dir, ignore_errors=True)
    report: dict[str, object] = {
        "options": {
            **{k: v for k, v in asdict(options).items() if k != "gateway_env"},
            "output": str(options.output),
        },
        "placement": {
            "server_core": cores.server,
            "generator_core": cores.generator,
            "generator_pinned": pinned,
            "worker_nice": options.worker_nice,
        },
        "gateway_env": dict(options.gateway_env),
        "machine": machine,
        "load_average_end": load_average(),
        "scenarios": summaries,
    }
    write_reports(report, options.output)
    return report


class Stopped(Exception):
    """The run was cut short (a signal or the time budget); everything it started is stopped."""


def run_with_guards(options: Options) -> dict[str, object]:
    """``run`` under uvloop, cancelled cleanly on SIGINT, SIGTERM or when the budget is spent."""
    import uvloop

    async def guarded() -> dict[str, object]:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        reasons: list[str] = []

        def stop(reason: str) -> None:
            reasons.append(reason)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, signal.Signals(sig).name)
        timer = loop.call_later(options.budget_s(), stop, f"time budget {options.budget_s():.0f}s")
        try:
            return await run(options)
        except asyncio.CancelledError:
            if reasons:
                raise Stopped(reasons[0]) from None
            raise
        finally:
            timer.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(guarded())
