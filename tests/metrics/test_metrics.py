"""``/metrics`` moves exactly as a scripted run says it should.

The run goes through a fal emulator configured under a provider name no other test uses
(``metricsfal``, priced at a fixed $0.010 through a catalog override) and a team of its own, so
the counters it reads belong to this test alone although the registry is process-wide.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Backend, Gateway, start_gateway
from tests.emulators.fal import FalEmulator
from tests.emulators.support import Knobs
from tests.helpers import Client, new_key
from tests.metrics.support import Samples, scrape
from tests.providers.upstreams import UPSTREAMS

PROVIDER = "metricsfal"
MODEL = "black-forest-labs/flux-2-dev"
PRICE_MICROS = 10_000
CATALOG = f"""
models:
  {MODEL}:
    providers:
      {PROVIDER}:
        model: fal-ai/flux-2
        price: {{kind: fixed, usd: "0.010"}}
"""


@pytest.fixture
async def metered(
    fresh_backend: Backend, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, FalEmulator]]:
    emulator = FalEmulator()
    emulator.reset(Knobs(latency=(0.05, 0.1), seed=3))
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    with emulator.serve() as url:
        settings = UPSTREAMS["fal"].settings(emulator, url, kind="fal")
        async for gateway in start_gateway(
            fresh_backend,
            tmp_path,
            providers={PROVIDER: settings},
            simulator={"enabled": False},
            catalog_path=catalog,
            routing={"breaker_consecutive_failures": 2, "breaker_cooldown_s": 600},
        ):
            yield gateway, emulator


def job_body(prompt: str) -> dict[str, Any]:
    return {
        "model": "flux-2-dev",
        "input": {"prompt": prompt},
        "routing": {"providers": [PROVIDER], "allow_fallbacks": False},
    }


async def create(client: Client, prompt: str) -> str:
    response = await client.create(job_body(prompt))
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


async def wait_for(client: Client, job_id: str, stages: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job: dict[str, Any] = (await client.get(job_id)).json()
        if job["stage"] in stages:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job_id} never reached {stages}")


async def until(gateway: Gateway, check: Any) -> Samples:
    """Scrape until ``check(samples)`` holds (an outcome reported just after a commit)."""
    deadline = time.monotonic() + 10
    while True:
        samples = await scrape(gateway.http)
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_a_scripted_run_moves_every_series_by_what_it_did(
    metered: tuple[Gateway, FalEmulator],
) -> None:
    gateway, emulator = metered
    key = await new_key(gateway.runtime)
    principal = await gateway.runtime.keys.verify(key)
    assert principal is not None
    team = principal.team_id
    client = gateway.client(key)
    before = await scrape(gateway.http)

    # Three jobs complete: submitted, polled, outputs fetched, priced.
    done = [await create(client, f"fox {i}") for i in range(3)]
    for job_id in done:
        job = await client.wait(job_id)
        assert job["status"] == "completed", (job["error"], job["attempts"])

    # One job held at the upstream: in flight, one poll answered 503, then cancelled.
    emulator.knobs.latency = (30.0, 30.0)
    held = await create(client, "held")
    await wait_for(client, held, {"upstream_queued", "running"})
    flying = await scrape(gateway.http)
    assert flying.value("imagegate_jobs_in_flight", provider=PROVIDER) == 1
    emulator.knobs.burst_5xx = 1
    while emulator.knobs.burst_5xx:  # the next poll takes it
        await asyncio.sleep(0.02)
    assert (await client.cancel(held)).status_code == 200

    # One job fails upstream (breaker: 1 failure), then a submit answered 503 opens it (2).
    emulator.knobs.latency, emulator.knobs.failure_rate = (0.05, 0.1), 1.0
    failed = await create(client, "doomed")
    assert (await client.wait(failed))["status"] == "failed"
    emulator.knobs.submit_5xx = 1
    refused = await create(client, "refused")
    after = await until(
        gateway, lambda s: s.value("imagegate_provider_breaker_state", provider=PROVIDER) == 2
    )
    assert (await client.cancel(refused)).status_code == 200  # leave nothing pending behind
    after = await scrape(gateway.http)
    delta = after - before

    # Jobs: created and finished by provider, model and status; duration observed for each.
    assert delta.value("imagegate_jobs_created_total", provider=PROVIDER, model=MODEL) == 6
    finished = "imagegate_jobs_finished_total"
    assert delta.value(finished, provider=PROVIDER, model=MODEL, status="completed") == 3
    assert delta.value(finished, provider=PROVIDER, model=MODEL, status="failed") == 1
    assert delta.value(finished, provider=PROVIDER, model=MODEL, status="cancelled") == 2
    assert delta.value("imagegate_job_duration_seconds_count", provider=PROVIDER) == 6
    assert delta.value("imagegate_images_stored_total", provider=PROVIDER) == 3
    # Cost: exactly three times the price, in micro-dollars, for this team only.
    cost = "imagegate_job_cost_micro_usd_total"
    assert delta.value(cost, provider=PROVIDER, team=team) == 3 * PRICE_MICROS
    assert delta.value(cost, team=team) == 3 * PRICE_MICROS

    # Upstream calls by operation, and the two failures by kind and status.
    calls = "imagegate_upstream_request_duration_seconds_count"
    assert delta.value(calls, provider=PROVIDER, operation="submit") == 6
    assert delta.value(calls, provider=PROVIDER, operation="poll") >= 5
    assert delta.value(calls, provider=PROVIDER, operation="fetch") == 3
    assert delta.value(calls, provider=PROVIDER, operation="cancel") == 1  # the refused one
    # was back in imagegate's queue when cancelled: nothing to cancel upstream
    errors = "imagegate_upstream_errors_total"
    assert delta.value(errors, provider=PROVIDER, operation="submit", kind="not_accepted") == 1
    assert (
        delta.value(errors, provider=PROVIDER, operation="poll", kind="transient", status="503")
        == 1
    )
    assert delta.value(errors, provider=PROVIDER, operation="fetch") == 0

    # Nothing of ours in flight any more; the breaker is open.
    assert after.labelsets("imagegate_jobs_in_flight", provider=PROVIDER) == []
    assert after.value("imagegate_provider_breaker_state", provider=PROVIDER) == 2

    # The worker claimed every step, late by a measurable amount: dispatches and polls.
    lag = "imagegate_worker_claim_lag_seconds_count"
    assert delta.value(lag, stage="queued") >= 6
    assert delta.value(lag, stage="upstream_queued") + delta.value(lag, stage="running") >= 5

    # HTTP requests by route template and status.
    http = "imagegate_http_request_duration_seconds_count"
    assert delta.value(http, method="POST", route="/v1/images", status="202") == 6
    assert delta.value(http, method="DELETE", route="/v1/images/{job_id}", status="200") == 2
    assert delta.value(http, method="GET", route="/v1/images/{job_id}", status="200") >= 6
