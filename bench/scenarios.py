"""Scenarios B1 and B2 of the performance spec: their workloads, preparation and targets.

B1: ``POST /v1/images`` with the seed-shaped body, auth on, a worker running the jobs on the
simulator (default latency); expects 202. B2: ``GET /v1/images/{id}`` on ~200 completed jobs
created beforehand (the worker is stopped once they are done); expects 200. The reference gets
the same requests on the same paths.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import orjson

from bench.load import Workload
from bench.stack import Gateway

B1_BODY = orjson.dumps({"model": "flux-2-dev", "input": {"prompt": "bench", "aspect_ratio": "1:1"}})
TERMINAL = frozenset({"completed", "failed", "cancelled"})


class PreparationFailed(RuntimeError):
    """The gateway did not accept or finish the jobs a scenario needs."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A scenario's requests for the gateway and for the reference, plus facts to report."""

    gateway: Workload
    reference: Workload
    facts: dict[str, object]


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    title: str
    target_ratio: float
    target_p99_ms: float
    prepare: Callable[[Gateway], Awaitable[Prepared]]


def _auth(key: str, json_body: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if json_body:
        headers["Content-Type"] = "application/json"
    return headers


async def _prepare_b1(gateway: Gateway) -> Prepared:
    gateway.start_worker()
    headers = _auth(gateway.key, json_body=True)
    post = Workload("POST", ["/v1/images"], 202, B1_BODY, headers)
    return Prepared(post, post, {"body_bytes": len(B1_BODY)})


async def _create_jobs(
    session: aiohttp.ClientSession, gateway: Gateway, count: int, parallel: int = 16
) -> list[str]:
    gate = asyncio.Semaphore(parallel)
    headers = _auth(gateway.key, json_body=True)

    async def one(i: int) -> str:
        body = {"model": "flux-2-dev", "input": {"prompt": f"bench {i}", "aspect_ratio": "1:1"}}
        async with (
            gate,
            session.post(
                gateway.base_url + "/v1/images", data=orjson.dumps(body), headers=headers
            ) as response,
        ):
            if response.status != 202:
                text = (await response.text())[:500]
                raise PreparationFailed(f"POST /v1/images answered {response.status}: {text}")
            job_id: str = (await response.json())["job_id"]
            return job_id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _statuses(
    session: aiohttp.ClientSession, gateway: Gateway, job_ids: list[str]
) -> dict[str, str]:
    async def one(job_id: str) -> tuple[str, str]:
        url = f"{gateway.base_url}/v1/images/{job_id}"
        async with session.get(url, headers=_auth(gateway.key)) as response:
            return job_id, str((await response.json()).get("status", response.status))

    return dict(await asyncio.gather(*(one(j) for j in job_ids)))


async def _wait_finished(
    session: aiohttp.ClientSession, gateway: Gateway, job_ids: list[str], timeout_s: float
) -> dict[str, str]:
    """Poll until every job is terminal or ``timeout_s`` passed; their statuses by id."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = await _statuses(session, gateway, job_ids)
        if all(s in TERMINAL for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.5)


async def _body_size(session: aiohttp.ClientSession, gateway: Gateway, job_id: str) -> int:
    url = f"{gateway.base_url}/v1/images/{job_id}"
    async with session.get(url, headers=_auth(gateway.key)) as response:
        return len(await response.read())


async def _prepare_b2(gateway: Gateway, jobs: int = 200, timeout_s: float = 90.0) -> Prepared:
    """Create ``jobs`` jobs and let the worker finish them; B2 then reads the completed ones.

    Jobs still unfinished after ``timeout_s`` are left out (and counted in the facts): a stuck
    job is the gateway's problem to report, not a reason to lose the measurement.
    """
    gateway.start_worker(nice=0)  # only B1's measurement wants the worker in the background
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        job_ids = await _create_jobs(session, gateway, jobs)
        statuses = await _wait_finished(session, gateway, job_ids, timeout_s)
        completed = [job_id for job_id, status in statuses.items() if status == "completed"]
        if not completed:
            raise PreparationFailed(f"no job completed: {dict(Counter(statuses.values()))}")
        size = await _body_size(session, gateway, completed[0])
    gateway.stop_worker()
    paths = [f"/v1/images/{job_id}" for job_id in completed]
    facts: dict[str, object] = {
        "jobs_created": len(job_ids),
        "jobs_by_status": dict(Counter(statuses.values())),
        "jobs_ready_after_s": round(time.monotonic() - started, 1),
        "gateway_body_bytes": size,
    }
    return Prepared(
        Workload("GET", paths, 200, headers=_auth(gateway.key)),
        Workload("GET", paths, 200, headers=_auth(gateway.key)),
        facts,
    )


SCENARIOS: dict[str, Scenario] = {
    "B1": Scenario(
        "B1",
        "POST /v1/images (simulator, PostgreSQL + Redis, auth on)",
        target_ratio=0.5,
        target_p99_ms=50.0,
        prepare=_prepare_b1,
    ),
    "B2": Scenario(
        "B2",
        "GET /v1/images/{id} on existing jobs",
        target_ratio=0.7,
        target_p99_ms=20.0,
        prepare=_prepare_b2,
    ),
}
