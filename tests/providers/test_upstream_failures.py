"""How the gateway handles each kind of upstream misbehaviour, end to end through the worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulators.support import Knobs
from tests.helpers import body, new_key
from tests.providers.conftest import Wire
from tests.providers.upstreams import UPSTREAMS, Upstream

ASYNC_UPSTREAMS = ["replicate", "fal", "novita", "coretoday"]


def payload(upstream: Upstream) -> dict[str, Any]:
    return body("a lighthouse at dusk", **upstream.input)


@pytest.mark.parametrize("name", sorted(UPSTREAMS))
async def test_429_with_retry_after_delays_the_next_call(wire: Wire, name: str) -> None:
    upstream = UPSTREAMS[name]
    async for gateway, emulator in wire(upstream, Knobs(burst_429=1, retry_after=1.0)):
        client = gateway.client(await new_key(gateway.runtime))
        job = await client.wait((await client.create(payload(upstream))).json()["job_id"])
        assert job["status"] == "completed", job
        submits = [at for method, _, at in emulator.calls.log if method == "POST"]
        assert len(submits) >= 2
        assert submits[1] - submits[0] >= 1.0  # not retried before Retry-After
        assert len(emulator.ledger) == 1  # the refused submit was not paid


@pytest.mark.parametrize("name", sorted(UPSTREAMS))
async def test_5xx_before_acceptance_is_not_accepted_and_retried(wire: Wire, name: str) -> None:
    upstream = UPSTREAMS[name]
    async for gateway, emulator in wire(upstream, Knobs(submit_5xx=1)):
        client = gateway.client(await new_key(gateway.runtime))
        job = await client.wait((await client.create(payload(upstream))).json()["job_id"])
        assert job["status"] == "completed", job
        assert [a["status"] for a in job["attempts"]] == ["not_accepted", "completed"]
        assert len(emulator.ledger) == 1


@pytest.mark.parametrize("name", sorted(UPSTREAMS))
async def test_timeout_after_sending_is_never_resubmitted(wire: Wire, name: str) -> None:
    upstream = UPSTREAMS[name]
    knobs = Knobs(hang_submit_after_accept=3.0)
    async for gateway, emulator in wire(upstream, knobs, total_timeout_s=0.5):
        client = gateway.client(await new_key(gateway.runtime))
        job = await client.wait((await client.create(payload(upstream))).json()["job_id"])
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "submit_outcome_unknown"
        assert [a["status"] for a in job["attempts"]] == ["unknown"]
        assert len(emulator.ledger) == 1  # accepted once, never sent again


@pytest.mark.parametrize("name", [*ASYNC_UPSTREAMS, "together"])
async def test_moderation_fails_the_job_as_moderated(wire: Wire, name: str) -> None:
    upstream = UPSTREAMS[name]
    async for gateway, emulator in wire(upstream, Knobs(moderation_rate=1.0)):
        client = gateway.client(await new_key(gateway.runtime))
        job = await client.wait((await client.create(payload(upstream))).json()["job_id"])
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "moderated"
        assert len(emulator.ledger) == 1  # never failed over after moderation


@pytest.mark.parametrize("name", ASYNC_UPSTREAMS)
@pytest.mark.parametrize("knob", ["malformed", "unknown_status"])
async def test_malformed_or_unknown_status_fails_the_attempt_cleanly(
    wire: Wire, name: str, knob: str
) -> None:
    upstream = UPSTREAMS[name]
    async for gateway, emulator in wire(upstream, Knobs(**{knob: 100})):
        client = gateway.client(await new_key(gateway.runtime))
        job = await client.wait((await client.create(payload(upstream))).json()["job_id"])
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "upstream_error"
        assert job["error"]["message"]  # the logged reason travels with the job
        assert len(emulator.ledger) == 1
