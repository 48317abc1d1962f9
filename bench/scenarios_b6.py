"""B6, cost routing: a mixed workload over three priced upstreams, then the cheapest one down.

Three fal emulators (``tests/emulators``) run in this process under the names ``cheap``,
``fixed`` and ``dear``; a catalog override prices them $0.010 per megapixel, a fixed $0.015 per
request and $0.020 per megapixel, so which one is cheapest depends on the job (a 2 MP image or
two images cost less at the fixed price). The gateway (``imagegate api`` + ``imagegate worker``
on PostgreSQL + Redis, production breaker defaults) receives jobs at a steady rate through three
phases: all healthy; ``cheap`` refusing every submit (503, not billed); ``cheap`` back.

Reported per phase: jobs by status and provider, failed jobs, the actual cost against the
cheapest possible (per job, the lowest estimate among the upstreams that were healthy in that
phase), and how many submits reached ``cheap`` while it was down (breaker threshold plus one
probe per cool-down). Targets (performance.md): cost within 1 % of the cheapest possible while
all are healthy; 0 failed jobs during the outage.

Run: ``python -m bench --scenarios B6`` or ``python -m bench.scenarios_b6 --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from app.kit.money import usd_to_micros
from app.routing.catalog import Catalog
from app.routing.pricing import estimate
from bench.procs import ProcessGroup
from bench.stack import GatewaySetup, gateway_stack
from tests.emulators.fal import FalEmulator
from tests.emulators.support import Knobs

MODEL = "black-forest-labs/flux-2-dev"
PRICES: dict[str, dict[str, str]] = {
    "cheap": {"kind": "per_megapixel", "usd_per_mp": "0.010"},
    "fixed": {"kind": "fixed", "usd": "0.015"},
    "dear": {"kind": "per_megapixel", "usd_per_mp": "0.020"},
}
DOWN = "cheap"
PHASES = ("healthy", "outage", "recovered")
SIZES: list[dict[str, Any]] = [
    {"aspect_ratio": "1:1"},  # 1 MP
    {"aspect_ratio": "16:9"},  # just over 1 MP: billed as 2
    {"aspect_ratio": "custom", "width": 768, "height": 768},
    {"aspect_ratio": "custom", "width": 1536, "height": 1024},  # 1.5 MP: billed as 2
]
REPORTS = Path(__file__).resolve().parent / "reports"
SCENARIO_ID = "B6"


@dataclass(frozen=True, slots=True)
class B6Options:
    healthy_s: float = 30.0
    outage_s: float = 60.0
    recovered_s: float = 30.0
    rate: float = 6.0  # jobs per second, steady
    seed: int = 6
    output: Path = REPORTS
    core: int | None = None  # the gateway's core (the load runs wherever this process runs)


@dataclass
class Outcome:
    phase: str
    job: dict[str, Any]


@dataclass
class Run:
    emulators: dict[str, FalEmulator]
    catalog: Catalog
    outcomes: list[Outcome] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # phase -> start (unix time)


def catalog_override(path: Path) -> Catalog:
    providers = {name: {"model": "fal-ai/flux-2", "price": p} for name, p in PRICES.items()}
    document = {"models": {MODEL: {"providers": providers}}}
    path.write_text(yaml.safe_dump(document))
    return Catalog.model_validate(document)


def provider_env(name: str, emulator: FalEmulator, url: str) -> dict[str, str]:
    prefix = f"IMAGEGATE_PROVIDERS__{name.upper()}__"
    return {
        prefix + "KIND": "fal",
        prefix + "API_KEY": emulator.api_key,
        prefix + "BASE_URL": url,
        prefix + "FIRST_POLL_AFTER_S": "0.3",
        prefix + "POLL_CAP_S": "1.0",
    }


def workload(rng: random.Random, index: int) -> dict[str, Any]:
    fields: dict[str, Any] = dict(rng.choice(SIZES))
    fields["num_outputs"] = rng.choice((1, 1, 1, 2))
    fields["output_format"] = rng.choice(("webp", "jpg", "png"))
    return {"model": "flux-2-dev", "input": {"prompt": f"b6 job {index}", **fields}}


def cheapest_possible(run: Run, job: dict[str, Any], healthy: set[str]) -> int:
    request = job["input"]
    entry = run.catalog.models[MODEL]
    costs = [
        estimate(
            run.catalog,
            entry.providers[name].price,
            width=request["width"],
            height=request["height"],
            num_outputs=request["num_outputs"],
        )
        for name in healthy
    ]
    return min(c for c in costs if c is not None)


async def one_job(
    session: aiohttp.ClientSession, base_url: str, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with session.post(
        base_url + "/v1/images", data=orjson.dumps(body), headers={**headers, "Prefer": "wait=60"}
    ) as response:
        job: dict[str, Any] = await response.json()
        if response.status not in (200, 202):
            return {"status": f"http_{response.status}", "error": job, "input": body["input"]}
    while job.get("status") not in ("completed", "failed", "cancelled"):
        await asyncio.sleep(0.5)
        async with session.get(f"{base_url}/v1/images/{job['job_id']}", headers=headers) as got:
            job = await got.json()
    return job


async def drive(run: Run, base_url: str, key: str, options: B6Options) -> None:
    rng = random.Random(options.seed)
    plan = [
        ("healthy", options.healthy_s),
        ("outage", options.outage_s),
        ("recovered", options.recovered_s),
    ]
    tasks: list[asyncio.Task[None]] = []
    index = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:

        async def submit(phase: str, body: dict[str, Any]) -> None:
            run.outcomes.append(Outcome(phase, await one_job(session, base_url, key, body)))

        for phase, seconds in plan:
            run.emulators[DOWN].knobs.submit_5xx = 10**9 if phase == "outage" else 0
            run.marks[phase] = time.time()
            print(f"B6 {phase}: {seconds:.0f} s at {options.rate} jobs/s", flush=True)
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                tasks.append(asyncio.create_task(submit(phase, workload(rng, index))))
                index += 1
                await asyncio.sleep(1.0 / options.rate)
        run.marks["end"] = time.time()
        await asyncio.gather(*tasks)


def summarise(run: Run) -> dict[str, Any]:
    phases: dict[str, Any] = {}
    everyone = set(PRICES)
    for phase in PHASES:
        jobs = [o.job for o in run.outcomes if o.phase == phase]
        healthy = everyone - {DOWN} if phase == "outage" else everyone
        done = [j for j in jobs if j.get("status") == "completed"]
        actual = sum(usd_to_micros(j["cost"]["actual_usd"]) for j in done)
        cheapest = sum(cheapest_possible(run, j, healthy) for j in done)
        phases[phase] = {
            "jobs": len(jobs),
            "by_status": dict(Counter(str(j.get("status")) for j in jobs)),
            "failed_jobs": sum(1 for j in jobs if j.get("status") != "completed"),
            "by_provider": dict(Counter(str(j.get("provider")) for j in done)),
            "actual_cost_usd": str(Decimal(actual) / 1_000_000),
            "cheapest_possible_usd": str(Decimal(cheapest) / 1_000_000),
            "cost_over_cheapest": round(actual / cheapest, 4) if cheapest else None,
        }
    start, end = run.marks["outage"], run.marks["recovered"]
    down_calls = [at for method, _, at in run.emulators[DOWN].calls.log if method == "POST"]
    phases["outage"]["submits_reaching_the_down_upstream"] = sum(
        1 for at in down_calls if start <= at < end
    )
    healthy_ratio = phases["healthy"]["cost_over_cheapest"]
    return {
        "id": "B6",
        "title": "cost routing: mixed workload, three priced emulators, the cheapest down",
        "prices": PRICES,
        "phases": phases,
        "targets": {
            "healthy_cost_within_1pct": healthy_ratio is not None and healthy_ratio <= 1.01,
            "no_failed_jobs_during_outage": phases["outage"]["failed_jobs"] == 0,
        },
        "paid_submissions_by_upstream": {n: len(e.ledger) for n, e in run.emulators.items()},
    }


def markdown(summary: dict[str, Any], options: B6Options) -> str:
    lines = [
        "# B6: cost routing",
        "",
        f"{options.rate} jobs/s; phases {options.healthy_s:.0f} s healthy, "
        f"{options.outage_s:.0f} s with `{DOWN}` refusing every submit, "
        f"{options.recovered_s:.0f} s recovered. Prices: "
        + ", ".join(f"`{n}` {json.dumps(p)}" for n, p in PRICES.items()),
        "",
        "| phase | jobs | failed | by provider | actual $ | cheapest possible $ | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in PHASES:
        p = summary["phases"][phase]
        lines.append(
            f"| {phase} | {p['jobs']} | {p['failed_jobs']} | {p['by_provider']} | "
            f"{p['actual_cost_usd']} | {p['cheapest_possible_usd']} | {p['cost_over_cheapest']} |"
        )
    outage = summary["phases"]["outage"]
    lines += [
        "",
        f"Submits that reached `{DOWN}` while it was down: "
        f"{outage['submits_reaching_the_down_upstream']} (breaker threshold, then one probe "
        "per cool-down).",
        "",
        "Targets: "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in summary["targets"].items()),
        "",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def emulators(seed: int) -> Iterator[tuple[dict[str, FalEmulator], dict[str, str]]]:
    found: dict[str, FalEmulator] = {}
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for offset, name in enumerate(PRICES):
            emulator = FalEmulator(api_key=f"b6-{name}")
            emulator.reset(Knobs(latency=(0.5, 2.0), queue_time=(0.0, 0.3), seed=seed + offset))
            urls[name] = stack.enter_context(emulator.serve())
            found[name] = emulator
        yield found, urls


async def run_b6(options: B6Options, procs: ProcessGroup, work_dir: Path) -> dict[str, Any]:
    """The scenario on a fresh gateway; returns its summary and writes b6.json / b6.md."""
    with emulators(options.seed) as (found, urls):
        catalog = catalog_override(work_dir / "b6-catalog.yaml")
        env = {
            "IMAGEGATE_SIMULATOR__ENABLED": "false",
            "IMAGEGATE_CATALOG_PATH": str(work_dir / "b6-catalog.yaml"),
        }
        for name, emulator in found.items():
            env |= provider_env(name, emulator, urls[name])
        setup = GatewaySetup(options.core, 0, tuple(env.items()))
        async with gateway_stack("b6", procs, work_dir, setup) as gateway:
            gateway.start_worker()
            run = Run(found, catalog)
            await drive(run, gateway.base_url, gateway.key, options)
    summary = summarise(run)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "b6.json").write_text(json.dumps(summary, indent=2) + "\n")
    (options.output / "b6.md").write_text(markdown(summary, options))
    return summary


def parse_args(argv: list[str] | None = None) -> B6Options:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios_b6", description=__doc__)
    parser.add_argument("--healthy", type=float, default=30.0, help="seconds all healthy")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the cheapest is down")
    parser.add_argument("--recovered", type=float, default=30.0, help="seconds after recovery")
    parser.add_argument("--rate", type=float, default=6.0, help="jobs per second")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--output", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    return B6Options(args.healthy, args.outage, args.recovered, args.rate, args.seed, args.output)


async def _main(options: B6Options) -> dict[str, Any]:
    procs = ProcessGroup(options.output / "logs")
    work_dir = Path(tempfile.mkdtemp(prefix="imagegate-b6-"))
    try:
        return await run_b6(options, procs, work_dir)
    finally:
        procs.stop_all()
        shutil.rmtree(work_dir, ignore_errors=True)


def run_from_cli(options: B6Options) -> int:
    """Run B6, print its table; the exit code says whether both targets were met."""
    summary = asyncio.run(_main(options))
    print(markdown(summary, options))
    print(f"reports: {options.output / 'b6.json'}, {options.output / 'b6.md'}")
    return 0 if all(summary["targets"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    return run_from_cli(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
