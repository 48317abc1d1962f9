"""The Novita adapter against the Novita emulator over real loopback HTTP."""

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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import ConfigError, ProviderSettings
from app.providers.base import (
    Cancellable,
    ErrorCode,
    Lora,
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
from app.providers.novita import NovitaProvider, create
from app.providers.novita.mapping import to_submit_body
from tests.emulators.novita import NovitaEmulator
from tests.emulators.support import Knobs, serve

FAST = {"latency": (0.02, 0.05)}


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[NovitaEmulator, str]]:
    emulator = NovitaEmulator()
    with emulator.serve() as base_url:
        yield emulator, base_url


@pytest.fixture
def emulator(running: tuple[NovitaEmulator, str]) -> NovitaEmulator:
    running[0].reset(Knobs(**FAST))  # type: ignore[arg-type]
    return running[0]


@pytest.fixture
def base_url(running: tuple[NovitaEmulator, str]) -> str:
    return running[1]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport()) as client:
        yield client


def provider_for(
    base_url: str, http: httpx.AsyncClient, *, key: str = "novita-test-key", **settings: Any
) -> NovitaProvider:
    conf = ProviderSettings(kind="novita", api_key=key, base_url=base_url, **settings)
    return create("novita", conf, http)


def request(**fields: Any) -> UpstreamRequest:
    values: dict[str, Any] = {"prompt": "a red fox in snow", "width": 512, "height": 384}
    values["output_format"] = "png"
    values.update(fields)
    return UpstreamRequest(job_id="img_test", model="flux-2-dev", **values)


async def until_terminal(provider: NovitaProvider, ref: UpstreamRef) -> list[UpstreamState]:
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = await provider.poll(ref)
        seen.append(state)
        if state.status.is_terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"never terminal: {seen[-1:]}")


async def test_round_trip_serves_a_real_png_of_the_requested_size(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(base_url, http)
    job = request(seed=42)
    submitted = await provider.submit(job)
    assert submitted.state is None  # asynchronous: the state comes from polls
    states = await until_terminal(provider, UpstreamRef(submitted.upstream_id, job))
    final = states[-1]
    assert final.status is UpstreamStatus.SUCCEEDED
    assert final.seed == 42
    assert len(final.outputs) == 1
    assert final.outputs[0].content_type == "image/png"
    image = await http.get(final.outputs[0].url)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(image.content)) as decoded:
        assert (decoded.format, decoded.size) == ("PNG", (512, 384))
    assert emulator.ledger.ids() == [submitted.upstream_id]
    assert emulator.ledger.entries[0].body == to_submit_body(job)


async def test_random_seed_comes_back_as_the_seed_used(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(base_url, http)
    job = request(seed=None)
    submitted = await provider.submit(job)
    final = (await until_terminal(provider, UpstreamRef(submitted.upstream_id, job)))[-1]
    assert emulator.ledger.entries[0].body["seed"] == -1
    assert final.seed == emulator.tasks[submitted.upstream_id].seed
    assert final.seed is not None
    assert final.seed >= 0


async def test_input_images_and_loras_reach_the_upstream(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    job = request(
        input_images=("https://example.com/a.jpg",) * 3,
        loras=(Lora("https://example.com/l.safetensors", 0.7),) * 3,
        width=1536,
        height=256,
    )
    submitted = await provider_for(base_url, http).submit(job)
    body = emulator.ledger.entries[0].body
    assert body["images"] == ["https://example.com/a.jpg"] * 3
    assert body["loras"] == [{"path": "https://example.com/l.safetensors", "scale": 0.7}] * 3
    assert body["size"] == "1536*256"
    assert emulator.ledger.ids() == [submitted.upstream_id]


async def test_status_goes_queued_then_running_then_succeeded(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.queue_time = (0.3, 0.3)
    emulator.knobs.latency = (0.3, 0.3)
    provider = provider_for(base_url, http)
    job = request()
    submitted = await provider.submit(job)
    ref = UpstreamRef(submitted.upstream_id, job)
    assert (await provider.poll(ref)).status is UpstreamStatus.QUEUED
    await asyncio.sleep(0.45)
    assert (await provider.poll(ref)).status is UpstreamStatus.RUNNING
    await asyncio.sleep(0.3)
    assert (await provider.poll(ref)).status is UpstreamStatus.SUCCEEDED


async def test_url_ttl_alternates_number_and_string_and_expires(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.url_ttl = 0.4
    provider = provider_for(base_url, http)
    urls = []
    for _ in range(2):
        job = request()
        submitted = await provider.submit(job)
        final = (await until_terminal(provider, UpstreamRef(submitted.upstream_id, job)))[-1]
        urls.append(final.outputs[0].url)
    raw = [
        (
            await http.get(
                f"{base_url}/v3/async/task-result",
                params={"task_id": task_id},
                headers={"authorization": "Bearer novita-test-key"},
            )
        ).json()
        for task_id in emulator.ledger.ids()
    ]
    assert {type(doc["images"][0]["image_url_ttl"]) for doc in raw} == {int, str}
    assert all(isinstance(doc["extra"]["seed"], str) for doc in raw)
    assert (await http.get(urls[0])).status_code == 200
    await asyncio.sleep(0.5)
    assert (await http.get(urls[0])).status_code == 403


async def test_serve_outputs_once(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.serve_outputs_once = True
    provider = provider_for(base_url, http)
    job = request()
    submitted = await provider.submit(job)
    final = (await until_terminal(provider, UpstreamRef(submitted.upstream_id, job)))[-1]
    assert (await http.get(final.outputs[0].url)).status_code == 200
    assert (await http.get(final.outputs[0].url)).status_code == 403


async def test_submit_429_is_not_accepted_with_retry_after(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 7
    with pytest.raises(NotAccepted) as caught:
        await provider_for(base_url, http).submit(request())
    assert caught.value.retry_after is not None
    assert caught.value.retry_after >= 7
    assert len(emulator.ledger) == 0


async def test_poll_429_is_transient_with_retry_after(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(base_url, http)
    job = request()
    submitted = await provider.submit(job)
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 3
    with pytest.raises(TransientError) as caught:
        await provider.poll(UpstreamRef(submitted.upstream_id, job))
    assert caught.value.retry_after is not None
    assert caught.value.retry_after >= 3


@pytest.mark.parametrize("knob", ["submit_5xx", "burst_5xx"])
async def test_5xx_before_acceptance_is_not_accepted_and_not_paid(
    knob: str, emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    setattr(emulator.knobs, knob, 1)
    provider = provider_for(base_url, http)
    with pytest.raises(NotAccepted):
        await provider.submit(request())
    assert len(emulator.ledger) == 0
    await provider.submit(request())  # the burst is over
    assert len(emulator.ledger) == 1


async def test_hang_after_acceptance_is_outcome_unknown_and_paid_once(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.hang_submit_after_accept = 1.0
    provider = provider_for(base_url, http, total_timeout_s=0.3)
    with pytest.raises(OutcomeUnknown):
        await provider.submit(request())
    assert len(emulator.ledger) == 1
    assert emulator.calls.count("POST", "/v3/async/flux-2-dev") == 1


async def test_connection_refused_is_not_accepted(http: httpx.AsyncClient) -> None:
    with pytest.raises(NotAccepted):
        await provider_for("http://127.0.0.1:9", http).submit(request())


async def test_bad_key_is_not_accepted(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(NotAccepted, match="401"):
        await provider_for(base_url, http, key="wrong").submit(request())
    assert len(emulator.ledger) == 0


async def test_out_of_range_size_is_rejected_by_the_upstream(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    with pytest.raises(Rejected, match="400"):
        await provider_for(base_url, http).submit(request(width=2048))
    assert len(emulator.ledger) == 0


@pytest.mark.parametrize(
    ("knob", "code"),
    [("moderation_rate", ErrorCode.MODERATED), ("failure_rate", ErrorCode.UPSTREAM_ERROR)],
)
async def test_failed_tasks(
    knob: str, code: ErrorCode, emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    setattr(emulator.knobs, knob, 1.0)
    provider = provider_for(base_url, http)
    job = request()
    submitted = await provider.submit(job)
    final = (await until_terminal(provider, UpstreamRef(submitted.upstream_id, job)))[-1]
    assert final.status is UpstreamStatus.FAILED
    assert final.error_code is code
    assert final.error_message
    assert final.outputs == ()
    assert len(emulator.ledger) == 1


@pytest.mark.parametrize(
    ("knob", "reason"),
    [("malformed", "malformed JSON"), ("unknown_status", "undocumented task status")],
)
async def test_unreadable_results_are_protocol_violations(
    knob: str, reason: str, emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(base_url, http)
    job = request()
    submitted = await provider.submit(job)
    setattr(emulator.knobs, knob, 1)
    with pytest.raises(ProtocolViolation, match=reason):
        await provider.poll(UpstreamRef(submitted.upstream_id, job))


async def test_poll_timeout_is_transient(
    emulator: NovitaEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = provider_for(base_url, http, total_timeout_s=0.2)
    job = request()
    submitted = await provider.submit(job)
    emulator.knobs.hang_polls = 0.6
    with pytest.raises(TransientError):
        await provider.poll(UpstreamRef(submitted.upstream_id, job))


class HookSink:
    """A loopback endpoint that records the webhooks it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        return Response(status_code=204)


@pytest.mark.parametrize(
    ("duplicate", "out_of_order", "deliveries"), [(False, False, 1), (True, True, 3)]
)
async def test_webhooks_are_unverified_hints_for_the_task(
    duplicate: bool,
    out_of_order: bool,
    deliveries: int,
    emulator: NovitaEmulator,
    base_url: str,
    http: httpx.AsyncClient,
) -> None:
    emulator.knobs.webhook_duplicate = duplicate
    emulator.knobs.webhook_out_of_order = out_of_order
    sink = HookSink()
    provider = provider_for(base_url, http)
    with serve(sink.app) as sink_url:
        submitted = await provider.submit(request(webhook_url=f"{sink_url}/hook"))
        deadline = time.monotonic() + 5
        while len(sink.received) < deliveries and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # nothing more arrives
    assert len(sink.received) == deliveries
    for headers, body in sink.received:
        update = provider.parse_webhook(headers, body)
        assert (update.upstream_id, update.verified, update.state) == (
            submitted.upstream_id,
            False,
            None,
        )
    assert emulator.ledger.entries[0].body["extra"] == {"webhook": {"url": f"{sink_url}/hook"}}


def test_protocols_capabilities_and_timing(http: httpx.AsyncClient) -> None:
    provider = provider_for("https://novita.invalid", http)
    assert isinstance(provider, WebhookReceiver)
    assert not isinstance(provider, Cancellable)  # Novita has no cancel endpoint
    caps = provider.capabilities("flux-2-dev")
    assert (caps.max_input_images, caps.max_loras, caps.min_side, caps.max_side) == (
        3,
        3,
        256,
        1536,
    )
    assert (caps.max_outputs, caps.cancel, caps.webhooks, caps.formats) == (
        1,
        False,
        True,
        frozenset({"png"}),
    )
    timing = provider.poll_timing()
    assert (timing.first_poll_after, timing.cap, timing.backoff) == (3.0, 10.0, 1.5)
    tuned = provider_for("https://novita.invalid", http, first_poll_after_s=1.0, poll_cap_s=4.0)
    assert (tuned.poll_timing().first_poll_after, tuned.poll_timing().cap) == (1.0, 4.0)


def test_a_provider_without_a_key_is_a_config_error(http: httpx.AsyncClient) -> None:
    with pytest.raises(ConfigError, match="api_key"):
        create("novita", ProviderSettings(kind="novita"), http)
