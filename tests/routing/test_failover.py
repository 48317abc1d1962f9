"""Cost routing end to end over three priced upstreams: the cheapest wins while healthy, a dead
one is routed around without failed jobs, one probe finds it again, and nothing is paid twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.routing.breaker import State
from tests.conftest import Backend
from tests.emulators.support import Knobs
from tests.helpers import new_key
from tests.routing.priced import FAST, Priced, priced_gateway, run_jobs, small_job

FOREVER = 10**9


def roles(rig: Priced, jobs: list[dict[str, Any]]) -> Counter[str | None]:
    return Counter(rig.role(job["provider"]) for job in jobs)


async def breaker_state(rig: Priced, role: str) -> State:
    views = await rig.gateway.runtime.health.breaker_views([rig.names[role]])
    return views[rig.names[role]].state


def assert_costed(job: dict[str, Any], usd: str) -> None:
    assert job["status"] == "completed", job
    assert job["cost"] == {"estimated_usd": usd, "actual_usd": usd, "currency": "USD"}


# The choice does not depend on the job store, and 200 jobs take a while on SQLite: this one runs
# on the distributed backend only (every other test here runs on both).
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_healthy_upstreams_200_jobs_all_go_to_the_cheapest(
    backend: Backend, tmp_path: Path
) -> None:
    async for rig in priced_gateway(backend, tmp_path):
        client = rig.gateway.client(await new_key(rig.gateway.runtime))
        jobs = await run_jobs(client, [small_job(f"scene {i}") for i in range(200)])
        assert roles(rig, jobs) == {"cheap": 200}
        for job in jobs:
            assert_costed(job, "0.010000")
            [attempt] = job["attempts"]
            assert attempt["status"] == "completed"
        assert len(rig.emulators["cheap"].ledger) == 200
        assert rig.submits("next") == rig.submits("dear") == 0


async def test_cheapest_down_routes_around_it_then_one_probe_brings_traffic_back(
    backend: Backend, tmp_path: Path
) -> None:
    async for rig in priced_gateway(backend, tmp_path):
        client = rig.gateway.client(await new_key(rig.gateway.runtime))
        cheap = rig.emulators["cheap"]

        # The cheapest refuses every submit (503, not billed): jobs fail over to the next one
        # at once, and after 3 refusals its breaker opens: no further call reaches it.
        cheap.knobs.submit_5xx = FOREVER
        down = [await run_jobs(client, [small_job(f"down {i}")]) for i in range(6)]
        jobs = [job for batch in down for job in batch]
        assert roles(rig, jobs) == {"next": 6}
        for index, job in enumerate(jobs):
            assert_costed(job, "0.015000")
            statuses = [(rig.role(a["provider"]), a["status"]) for a in job["attempts"]]
            expected = [("cheap", "not_accepted")] if index < 3 else []
            assert statuses == [*expected, ("next", "completed")]
        assert rig.submits("cheap") == 3 and len(cheap.ledger) == 0
        assert await breaker_state(rig, "cheap") is State.OPEN

        # Concurrent jobs while it is open: none reaches it, none fails.
        jobs = await run_jobs(client, [small_job(f"open {i}") for i in range(20)])
        assert roles(rig, jobs) == {"next": 20}
        assert rig.submits("cheap") == 3

        # After the cool-down, a burst while it is still down: exactly one probe reaches it,
        # fails, and reopens the breaker; every job still completes on the next one.
        rig.clock.advance(30)
        assert await breaker_state(rig, "cheap") is State.HALF_OPEN
        jobs = await run_jobs(client, [small_job(f"probe {i}") for i in range(10)])
        assert roles(rig, jobs) == {"next": 10}
        assert rig.submits("cheap") == 4
        assert await breaker_state(rig, "cheap") is State.OPEN

        # It recovers. After the cool-down a burst arrives while the probe's answer is slow:
        # the probe is the only submit it sees until the probe succeeds ...
        cheap.knobs.submit_5xx = 0
        cheap.knobs.hang_submit_after_accept = 2.0
        rig.clock.advance(30)
        jobs = await run_jobs(client, [small_job(f"recover {i}") for i in range(10)])
        assert roles(rig, jobs) == {"cheap": 1, "next": 9}
        assert rig.submits("cheap") == 5 and len(cheap.ledger) == 1
        assert await breaker_state(rig, "cheap") is State.CLOSED

        # ... and then traffic is back on the cheapest.
        cheap.knobs.hang_submit_after_accept = 0.0
        jobs = await run_jobs(client, [small_job(f"back {i}") for i in range(10)])
        assert roles(rig, jobs) == {"cheap": 10}
        for job in jobs:
            assert_costed(job, "0.010000")
        # Never a double submission anywhere.
        for emulator in rig.emulators.values():
            assert len(set(emulator.ledger.ids())) == len(emulator.ledger)


async def test_accepted_then_timed_out_is_never_failed_over(
    backend: Backend, tmp_path: Path
) -> None:
    knobs = {"cheap": Knobs(**{**FAST.__dict__, "hang_submit_after_accept": 3.0})}
    async for rig in priced_gateway(
        backend,
        tmp_path,
        knobs=knobs,
        provider_settings={"cheap": {"total_timeout_s": 0.5}},
        submit_unknown_grace_s=0.3,
    ):
        client = rig.gateway.client(await new_key(rig.gateway.runtime))
        [job] = await run_jobs(client, [small_job("one paid submission only")])
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "submit_outcome_unknown"
        assert [(rig.role(a["provider"]), a["status"]) for a in job["attempts"]] == [
            ("cheap", "unknown")
        ]
        assert len(rig.emulators["cheap"].ledger) == 1  # accepted once, never sent again
        assert rig.submits("next") == rig.submits("dear") == 0


async def test_every_candidate_open_makes_the_job_wait_not_fail(
    backend: Backend, tmp_path: Path
) -> None:
    async for rig in priced_gateway(backend, tmp_path):
        client = rig.gateway.client(await new_key(rig.gateway.runtime))
        health = rig.gateway.runtime.health
        for role in ("cheap", "next"):
            for _ in range(3):
                await health.breakers.record(health.key(rig.names[role]), False)
        only = {"routing": {"providers": [rig.names["cheap"], rig.names["next"]]}}
        # Admission sees nothing healthy that could serve it: 503 with a Retry-After.
        refused = await client.create(small_job("nobody home") | only)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "no_provider_available"
        assert int(refused.headers["retry-after"]) == 30
        # Half-open, but both probes are out (their holders will never report back): the job
        # is admitted, and waits in the queue for a probe slot instead of failing.
        rig.clock.advance(30)
        for role in ("cheap", "next"):
            assert (await health.acquire(rig.names[role])).probe
        created = await client.create(small_job("patient") | only)
        assert created.status_code == 202, created.text
        await asyncio.sleep(0.5)  # the worker looks at it and puts it back
        job = (await client.get(created.json()["job_id"])).json()
        assert job["status"] == "pending" and job["attempts"] == []
        assert rig.submits("cheap") == rig.submits("next") == 0
        # ... until the probe slot frees up (the probe timeout passes): then it completes.
        rig.clock.advance(rig.gateway.runtime.settings.routing.breaker_probe_timeout_s)
        done = await client.wait(created.json()["job_id"], timeout=30)
        assert done["status"] == "completed", done
        assert rig.role(done["provider"]) == "cheap"
