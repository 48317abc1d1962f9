"""The core.today adapter against the core.today emulator, in both documented answer shapes."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx_aiohttp
import pytest
from PIL import Image

from app.providers.base import (
    Cancellable,
    ErrorCode,
    NotAccepted,
    OutcomeUnknown,
    ProtocolViolation,
    Rejected,
    TransientError,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
    WebhookReceiver,
)
from app.providers.coretoday import CoreTodayProvider, create
from app.providers.coretoday.mapping import build_create_body
from app.providers.registry import load_factory
from tests.emulators.coretoday import CoreTodayEmulator
from tests.emulators.replicate import WebhookSink
from tests.emulators.support import Knobs

PIL_FORMATS = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}
CANCELED = {"seed": "cancelled", "replicate": "canceled"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport()) as client:
        yield client


@pytest.fixture(scope="module", params=["seed", "replicate"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[CoreTodayEmulator, str]]:
    emulator = CoreTodayEmulator(shape=request.param)
    with emulator.serve() as url:
        yield emulator, url


@pytest.fixture
def emulator(served: tuple[CoreTodayEmulator, str]) -> CoreTodayEmulator:
    served[0].reset(Knobs(latency=(0.03, 0.06), seed=5))
    return served[0]


@pytest.fixture
def base_url(served: tuple[CoreTodayEmulator, str]) -> str:
    return served[1]


def provider_for(
    emulator: CoreTodayEmulator, base_url: str, http: httpx.AsyncClient, **overrides: Any
) -> CoreTodayProvider:
    return create("coretoday", emulator.provider_settings(base_url, **overrides), http)


@pytest.fixture
def provider(
    emulator: CoreTodayEmulator, base_url: str, http: httpx.AsyncClient
) -> CoreTodayProvider:
    return provider_for(emulator, base_url, http)


@pytest.fixture
def sink() -> Iterator[tuple[WebhookSink, str]]:
    receiver = WebhookSink()
    with receiver.serve() as url:
        yield receiver, url


def fox(**fields: Any) -> UpstreamRequest:
    values: dict[str, Any] = {
        "job_id": "img_01JD8X3Q5W6Z9K2M4N7P0R1S3T",
        "model": "black-forest-labs/flux-2-dev",
        "prompt": "a red fox in fresh snow",
        "width": 1024,
        "height": 1024,
    }
    return UpstreamRequest(**(values | fields))


async def run_to_end(
    provider: CoreTodayProvider, request: UpstreamRequest, timeout: float = 5.0
) -> tuple[UpstreamRef, UpstreamState]:
    submitted = await provider.submit(request)
    ref = UpstreamRef(submitted.upstream_id, request, submitted.handle, time.time())
    deadline = time.monotonic() + timeout
    while True:
        state = await provider.poll(ref)
        if state.status.is_terminal or time.monotonic() > deadline:
            return ref, state
        await asyncio.sleep(0.02)


def test_registry_capabilities_and_poll_timing(
    emulator: CoreTodayEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(emulator, base_url, http)
    tuned = provider_for(emulator, base_url, http, first_poll_after_s=1, poll_cap_s=3)

    assert load_factory("coretoday") is create
    assert isinstance(provider, Cancellable)
    assert isinstance(provider, WebhookReceiver)
    caps = provider.capabilities("black-forest-labs/flux-2-dev")
    assert (caps.max_input_images, caps.max_loras, caps.max_outputs) == (4, 0, 1)
    assert (caps.min_side, caps.max_side, caps.cancel, caps.webhooks) == (256, 1440, True, True)
    timing = provider.poll_timing()
    assert (timing.first_poll_after, timing.backoff, timing.cap) == (3.5, 1.5, 10.0)
    assert (tuned.poll_timing().first_poll_after, tuned.poll_timing().cap) == (1, 3)


@pytest.mark.parametrize(
    ("fields", "size", "fmt"),
    [
        ({"aspect_ratio": "custom", "width": 320, "height": 512, "output_format": "png"},
         (320, 512), "png"),
        ({"aspect_ratio": "4:3", "width": 1184, "height": 896, "output_format": "jpg", "seed": 9},
         (1184, 896), "jpg"),
        ({}, (1024, 1024), "webp"),
    ],
)  # fmt: skip
async def test_round_trip_serves_real_images(
    provider: CoreTodayProvider,
    emulator: CoreTodayEmulator,
    http: httpx.AsyncClient,
    fields: dict[str, Any],
    size: tuple[int, int],
    fmt: str,
) -> None:
    request = fox(**fields)
    ref, state = await run_to_end(provider, request)

    assert state.status is UpstreamStatus.SUCCEEDED
    assert state.raw_status == {"seed": "completed", "replicate": "succeeded"}[emulator.shape]
    assert len(state.outputs) == 1
    image = Image.open(io.BytesIO((await http.get(state.outputs[0].url)).content))
    assert (image.size, image.format) == (size, PIL_FORMATS[fmt])
    assert emulator.ledger.ids() == [ref.upstream_id]
    assert emulator.ledger.entries[0].body == build_create_body(request)
    assert emulator.calls.count("POST", "/v1/predictions") == 1


async def test_emulator_also_takes_a_bearer_token(
    emulator: CoreTodayEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    body = {"model": "black-forest-labs/flux-2-dev", "input": {"prompt": "a fox"}}

    answer = await http.post(f"{base_url}/v1/predictions", json=body, headers=headers)

    assert answer.status_code == 201
    assert answer.json()["status"] == {"seed": "pending", "replicate": "starting"}[emulator.shape]


async def test_429_carries_retry_after_and_nothing_is_paid(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 12

    with pytest.raises(NotAccepted) as refused:
        await provider.submit(fox())

    assert refused.value.retry_after is not None
    assert refused.value.retry_after >= 12
    assert len(emulator.ledger) == 0


async def test_429_on_poll_is_transient_with_retry_after(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 2

    with pytest.raises(TransientError) as later:
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))

    assert later.value.retry_after is not None
    assert later.value.retry_after >= 2


async def test_5xx_before_acceptance_is_not_accepted_and_not_paid(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    emulator.knobs.submit_5xx = 1

    with pytest.raises(NotAccepted, match="HTTP 500"):
        await provider.submit(fox())

    assert len(emulator.ledger) == 0


async def test_5xx_on_poll_is_transient(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.burst_5xx = 1

    with pytest.raises(TransientError, match="HTTP 503"):
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))


async def test_hang_after_acceptance_is_outcome_unknown_with_one_paid_submission(
    emulator: CoreTodayEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.hang_submit_after_accept = 0.6
    provider = provider_for(emulator, base_url, http, total_timeout_s=0.2)

    with pytest.raises(OutcomeUnknown):
        await provider.submit(fox())

    assert len(emulator.ledger) == 1
    assert emulator.calls.count("POST", "/v1/predictions") == 1


async def test_bad_key_is_not_accepted(
    emulator: CoreTodayEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(emulator, base_url, http, api_key="ct_wrong")

    with pytest.raises(NotAccepted, match="401"):
        await provider.submit(fox())
    assert len(emulator.ledger) == 0


async def test_invalid_input_is_rejected(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    with pytest.raises(Rejected, match="height"):
        await provider.submit(fox(aspect_ratio="custom", height=4096))
    assert len(emulator.ledger) == 0


async def test_moderation_fails_the_job_as_moderated(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    emulator.knobs.moderation_rate = 1.0

    _, state = await run_to_end(provider, fox())

    assert state.status is UpstreamStatus.FAILED
    assert state.error_code is ErrorCode.MODERATED


async def test_a_failed_run_is_an_upstream_error(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    emulator.knobs.failure_rate = 1.0

    _, state = await run_to_end(provider, fox())

    assert state.status is UpstreamStatus.FAILED
    assert state.error_code is ErrorCode.UPSTREAM_ERROR


async def test_malformed_answer_is_a_protocol_violation(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.malformed = 1

    with pytest.raises(ProtocolViolation, match="malformed JSON"):
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))


async def test_unknown_status_is_a_protocol_violation(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.unknown_status = 1

    with pytest.raises(ProtocolViolation, match="undocumented status 'queued_on_gpu'"):
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))


async def test_cancel_a_running_prediction(
    provider: CoreTodayProvider, emulator: CoreTodayEmulator
) -> None:
    emulator.knobs.latency = (5.0, 5.0)
    submitted = await provider.submit(fox())
    ref = UpstreamRef(submitted.upstream_id, fox())
    assert (await provider.poll(ref)).status is UpstreamStatus.RUNNING

    await provider.cancel(ref)
    state = await provider.poll(ref)

    assert state.status is UpstreamStatus.CANCELED
    assert state.raw_status == CANCELED[emulator.shape]
    assert emulator.calls.count("DELETE", f"/v1/predictions/{ref.upstream_id}") == 1


async def test_webhook_is_a_hint_and_one_poll_confirms_it(
    provider: CoreTodayProvider,
    emulator: CoreTodayEmulator,
    sink: tuple[WebhookSink, str],
) -> None:
    receiver, hook = sink
    submitted = await provider.submit(fox(webhook_url=hook))

    [(headers, body)] = await receiver.wait_for(1)
    update = provider.parse_webhook(headers, body)
    confirmed = await provider.poll(UpstreamRef(update.upstream_id, fox()))

    assert emulator.ledger.entries[0].body["webhook_events"] == ["completed", "failed"]
    assert (update.upstream_id, update.verified, update.state) == (
        submitted.upstream_id,
        False,
        None,
    )
    assert confirmed.status is UpstreamStatus.SUCCEEDED


async def test_failed_job_sends_a_failed_webhook(
    provider: CoreTodayProvider,
    emulator: CoreTodayEmulator,
    sink: tuple[WebhookSink, str],
) -> None:
    receiver, hook = sink
    emulator.knobs.failure_rate = 1.0
    await provider.submit(fox(webhook_url=hook))

    [(headers, body)] = await receiver.wait_for(1)

    assert provider.parse_webhook(headers, body).verified is False
    assert json.loads(body)["status"] == "failed"


async def test_duplicate_and_stale_webhooks_stay_hints(
    provider: CoreTodayProvider,
    emulator: CoreTodayEmulator,
    sink: tuple[WebhookSink, str],
) -> None:
    receiver, hook = sink
    emulator.knobs.webhook_duplicate = True
    emulator.knobs.webhook_out_of_order = True
    submitted = await provider.submit(fox(webhook_url=hook))

    deliveries = await receiver.wait_for(3)
    updates = [provider.parse_webhook(h, b) for h, b in deliveries]

    assert json.loads(deliveries[-1][1])["status"] == "processing"  # stale, after the end
    assert len(updates) == 3
    assert {u.upstream_id for u in updates} == {submitted.upstream_id}
    assert all(not u.verified and u.state is None for u in updates)


async def test_without_an_api_key_nothing_is_sent(
    emulator: CoreTodayEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(emulator, base_url, http, api_key=None)

    with pytest.raises(NotAccepted, match="no API key"):
        await provider.submit(fox())
    assert emulator.calls.log == []
