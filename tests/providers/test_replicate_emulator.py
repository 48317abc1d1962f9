"""The Replicate adapter against the Replicate emulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import io
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
    WebhookRefused,
)
from app.providers.registry import load_factory
from app.providers.replicate import ReplicateProvider, create
from app.providers.replicate.mapping import FLUX_2_DEV_VERSION, build_create_body, resolve_target
from tests.emulators.replicate import ReplicateEmulator, sign
from tests.emulators.support import Knobs

PIL_FORMATS = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport()) as client:
        yield client


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ReplicateEmulator, str]]:
    emulator = ReplicateEmulator()
    with emulator.serve() as url:
        yield emulator, url


@pytest.fixture
def emulator(served: tuple[ReplicateEmulator, str]) -> ReplicateEmulator:
    served[0].reset(Knobs(latency=(0.03, 0.06), seed=7))
    return served[0]


@pytest.fixture
def base_url(served: tuple[ReplicateEmulator, str]) -> str:
    return served[1]


def provider_for(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient, **overrides: Any
) -> ReplicateProvider:
    return create("replicate", emulator.provider_settings(base_url, **overrides), http)


@pytest.fixture
def provider(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> ReplicateProvider:
    return provider_for(emulator, base_url, http)


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
    provider: ReplicateProvider, request: UpstreamRequest, timeout: float = 5.0
) -> tuple[UpstreamRef, UpstreamState]:
    submitted = await provider.submit(request)
    ref = UpstreamRef(submitted.upstream_id, request, submitted.handle, time.time())
    deadline = time.monotonic() + timeout
    while True:
        state = await provider.poll(ref)
        if state.status.is_terminal or time.monotonic() > deadline:
            return ref, state
        await asyncio.sleep(0.02)


def test_registry_finds_the_adapter_and_its_optional_powers(
    provider: ReplicateProvider,
) -> None:
    assert load_factory("replicate") is create
    assert isinstance(provider, Cancellable)
    assert isinstance(provider, WebhookReceiver)
    caps = provider.capabilities("black-forest-labs/flux-2-dev")
    assert (caps.max_input_images, caps.max_loras, caps.max_outputs) == (4, 0, 1)
    assert (caps.min_side, caps.max_side, caps.cancel, caps.webhooks) == (256, 1440, True, True)


def test_poll_timing_defaults_and_overrides(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    default = provider_for(emulator, base_url, http).poll_timing()
    tuned = provider_for(
        emulator, base_url, http, first_poll_after_s=0.5, poll_cap_s=4
    ).poll_timing()

    assert (default.first_poll_after, default.backoff, default.cap) == (3.0, 1.5, 10.0)
    assert (tuned.first_poll_after, tuned.cap) == (0.5, 4)


@pytest.mark.parametrize(
    ("fields", "size", "fmt"),
    [
        ({"aspect_ratio": "custom", "width": 640, "height": 384, "output_format": "png"},
         (640, 384), "png"),
        ({"aspect_ratio": "custom", "width": 256, "height": 1440, "output_format": "jpg",
          "seed": 42}, (256, 1440), "jpg"),
        ({"aspect_ratio": "16:9", "width": 1344, "height": 768}, (1344, 768), "webp"),
    ],
)  # fmt: skip
async def test_round_trip_serves_real_images(
    provider: ReplicateProvider,
    emulator: ReplicateEmulator,
    http: httpx.AsyncClient,
    fields: dict[str, Any],
    size: tuple[int, int],
    fmt: str,
) -> None:
    request = fox(**fields)
    ref, state = await run_to_end(provider, request)

    assert state.status is UpstreamStatus.SUCCEEDED
    assert len(state.outputs) == 1
    image = Image.open(io.BytesIO((await http.get(state.outputs[0].url)).content))
    assert (image.size, image.format) == (size, PIL_FORMATS[fmt])
    assert state.outputs[0].content_type == Image.MIME[PIL_FORMATS[fmt]]
    assert emulator.ledger.ids() == [ref.upstream_id]
    expected_body = build_create_body(request, resolve_target(request.model))
    assert emulator.ledger.entries[0].body == expected_body
    assert emulator.calls.count("POST", "/v1/models/black-forest-labs/flux-2-dev/") == 1
    if "seed" in fields:
        assert state.seed == fields["seed"]


async def test_version_pinned_by_settings_uses_the_version_route(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(emulator, base_url, http, model=FLUX_2_DEV_VERSION)
    _, state = await run_to_end(provider, fox())

    assert state.status is UpstreamStatus.SUCCEEDED
    assert emulator.calls.count("POST", "/v1/predictions") == 1
    assert emulator.ledger.entries[0].body["version"] == FLUX_2_DEV_VERSION


async def test_429_carries_retry_after_and_nothing_is_paid(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 7

    with pytest.raises(NotAccepted) as refused:
        await provider.submit(fox())

    assert refused.value.retry_after is not None
    assert refused.value.retry_after >= 7
    assert "throttled" in refused.value.message
    assert len(emulator.ledger) == 0


async def test_429_on_poll_is_transient_with_retry_after(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 4

    with pytest.raises(TransientError) as later:
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))

    assert later.value.retry_after is not None
    assert later.value.retry_after >= 4


async def test_5xx_before_acceptance_is_not_accepted_and_not_paid(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    emulator.knobs.submit_5xx = 1

    with pytest.raises(NotAccepted, match="HTTP 500"):
        await provider.submit(fox())
    assert len(emulator.ledger) == 0

    await provider.submit(fox())  # the burst is over: the next one is accepted and paid
    assert len(emulator.ledger) == 1


async def test_5xx_on_poll_is_transient(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.burst_5xx = 1

    with pytest.raises(TransientError, match="HTTP 503"):
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))


async def test_hang_after_acceptance_is_outcome_unknown_with_one_paid_submission(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.hang_submit_after_accept = 0.6
    provider = provider_for(emulator, base_url, http, total_timeout_s=0.2)

    with pytest.raises(OutcomeUnknown):
        await provider.submit(fox())

    assert len(emulator.ledger) == 1
    assert emulator.calls.count("POST", "/predictions") == 1


async def test_bad_key_is_not_accepted(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(emulator, base_url, http, api_key="r8_wrong")

    with pytest.raises(NotAccepted, match="401"):
        await provider.submit(fox())
    assert len(emulator.ledger) == 0


async def test_invalid_input_is_rejected(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    with pytest.raises(Rejected, match=r"input\.width"):
        await provider.submit(fox(aspect_ratio="custom", width=2048))
    assert len(emulator.ledger) == 0


@pytest.mark.parametrize("disable_checker", [False, True])
async def test_moderation_fails_the_job_as_moderated(
    provider: ReplicateProvider, emulator: ReplicateEmulator, disable_checker: bool
) -> None:
    emulator.knobs.moderation_rate = 1.0

    _, state = await run_to_end(provider, fox(disable_safety_checker=disable_checker))

    assert state.status is UpstreamStatus.FAILED
    assert state.error_code is ErrorCode.MODERATED
    assert state.outputs == ()


async def test_a_failed_run_is_an_upstream_error(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    emulator.knobs.failure_rate = 1.0

    _, state = await run_to_end(provider, fox())

    assert state.status is UpstreamStatus.FAILED
    assert state.error_code is ErrorCode.UPSTREAM_ERROR
    assert state.error_message == "Prediction interrupted; please retry (code: PA)"


async def test_malformed_answer_is_a_protocol_violation(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.malformed = 1

    with pytest.raises(ProtocolViolation, match="malformed JSON"):
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))


async def test_unknown_status_is_a_protocol_violation(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    submitted = await provider.submit(fox())
    emulator.knobs.unknown_status = 1

    with pytest.raises(ProtocolViolation, match="undocumented status 'booting'"):
        await provider.poll(UpstreamRef(submitted.upstream_id, fox()))


async def test_cancel_a_running_prediction(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    emulator.knobs.latency = (5.0, 5.0)
    submitted = await provider.submit(fox())
    ref = UpstreamRef(submitted.upstream_id, fox())
    assert (await provider.poll(ref)).status is UpstreamStatus.RUNNING

    await provider.cancel(ref)
    state = await provider.poll(ref)

    assert state.status is UpstreamStatus.CANCELED
    assert state.raw_status == "canceled"
    assert emulator.calls.count("POST", f"/v1/predictions/{ref.upstream_id}/cancel") == 1


async def test_cancel_of_a_finished_prediction_changes_nothing(
    provider: ReplicateProvider, emulator: ReplicateEmulator
) -> None:
    ref, _ = await run_to_end(provider, fox())

    await provider.cancel(ref)

    assert (await provider.poll(ref)).status is UpstreamStatus.SUCCEEDED


async def test_outputs_expire_and_data_is_removed(
    provider: ReplicateProvider, emulator: ReplicateEmulator, http: httpx.AsyncClient
) -> None:
    emulator.knobs.url_ttl = 0.3
    ref, state = await run_to_end(provider, fox())
    assert (await http.get(state.outputs[0].url)).status_code == 200

    await asyncio.sleep(0.4)

    assert (await http.get(state.outputs[0].url)).status_code == 404
    removed = await provider.poll(ref)
    assert removed.status is UpstreamStatus.FAILED
    assert removed.error_code is ErrorCode.OUTPUT_FETCH_FAILED


async def test_outputs_served_once(
    provider: ReplicateProvider, emulator: ReplicateEmulator, http: httpx.AsyncClient
) -> None:
    emulator.knobs.serve_outputs_once = True
    _, state = await run_to_end(provider, fox())

    assert (await http.get(state.outputs[0].url)).status_code == 200
    assert (await http.get(state.outputs[0].url)).status_code == 404


async def test_emulator_honours_cancel_after_and_prefer_wait(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.latency = (5.0, 5.0)
    headers = {"Authorization": f"Bearer {emulator.api_key}", "Cancel-After": "150ms"}
    url = f"{base_url}/v1/models/black-forest-labs/flux-2-dev/predictions"
    body = {"input": {"prompt": "a fox"}}

    created = (await http.post(url, json=body, headers=headers)).json()
    waited = await http.post(url, json=body, headers={**headers, "Prefer": "wait=1"})
    await asyncio.sleep(0.2)
    later = (await http.get(created["urls"]["get"], headers=headers)).json()

    assert created["status"] == "starting"
    assert waited.status_code == 201
    assert waited.json()["status"] == "canceled"  # Cancel-After ended it inside the wait
    assert later["status"] == "canceled"
    assert later["started_at"] is not None


async def test_prefer_wait_answers_an_unfinished_prediction_as_starting(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.latency = (3.0, 3.0)
    url = f"{base_url}/v1/models/black-forest-labs/flux-2-dev/predictions"
    headers = {"Authorization": f"Bearer {emulator.api_key}", "Prefer": "wait=1"}

    answer = (await http.post(url, json={"input": {"prompt": "a fox"}}, headers=headers)).json()

    assert answer["status"] == "starting"
    assert answer["started_at"] is not None  # it is really processing


async def test_webhook_secret_is_fetched_when_not_configured(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(emulator, base_url, http, webhook_secret=None)
    body = b'{"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "processing"}'
    timestamp = str(int(time.time()))
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(emulator.webhook_secret, "msg_1", timestamp, body),
    }
    with pytest.raises(WebhookRefused, match="no webhook secret"):
        provider.parse_webhook(headers, body)

    await provider.load_webhook_secret()

    assert provider.parse_webhook(headers, body).verified
    assert emulator.calls.count("GET", "/v1/webhooks/default/secret") == 1


async def test_without_an_api_key_nothing_is_sent(
    emulator: ReplicateEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(emulator, base_url, http, api_key=None)

    with pytest.raises(NotAccepted, match="no API key"):
        await provider.submit(fox())
    assert emulator.calls.log == []
