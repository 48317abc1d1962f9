"""The fal adapter against the fal emulator over real loopback HTTP (aiohttp transport).

Round trips for the three endpoints (status always under the app's base path), the returned-URL
rule, failures and their classification, cancel, and webhooks as hints.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport
from PIL import Image
from pydantic import SecretStr
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
    PollTiming,
    ProtocolViolation,
    Rejected,
    TransientError,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
    WebhookReceiver,
)
from app.providers.fal import FalProvider, create
from app.providers.fal.mapping import build_input
from app.providers.registry import load_factory
from tests.emulators.fal import FalEmulator
from tests.emulators.support import Knobs, serve

MODEL = "fal-ai/flux-2"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FalEmulator, str]]:
    emulator = FalEmulator()
    with emulator.serve() as url:
        yield emulator, url


@pytest.fixture
def emulator(served: tuple[FalEmulator, str]) -> FalEmulator:
    served[0].reset(Knobs(seed=11))
    return served[0]


@pytest.fixture
def base_url(served: tuple[FalEmulator, str]) -> str:
    return served[1]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        yield client


@pytest.fixture
def provider(emulator: FalEmulator, base_url: str, http: httpx.AsyncClient) -> FalProvider:
    return make_provider(emulator, base_url, http)


def make_provider(
    emulator: FalEmulator, base_url: str, http: httpx.AsyncClient, **settings: Any
) -> FalProvider:
    values: dict[str, Any] = {"api_key": SecretStr(emulator.api_key), "base_url": base_url}
    return FalProvider("fal", ProviderSettings(**(values | settings)), http)


def job(**fields: Any) -> UpstreamRequest:
    values: dict[str, Any] = {"model": MODEL, "prompt": "a lighthouse", "width": 512, "height": 768}
    return UpstreamRequest(job_id="job_1", **(values | fields))


async def run_to_end(
    provider: FalProvider, ref: UpstreamRef, limit: float = 5.0
) -> list[UpstreamState]:
    states: list[UpstreamState] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        states.append(await provider.poll(ref))
        if states[-1].status.is_terminal:
            return states
        await asyncio.sleep(0.02)
    raise AssertionError(f"no terminal state within {limit}s: {states[-1:]}")


async def submit_and_finish(
    provider: FalProvider, request: UpstreamRequest
) -> tuple[UpstreamRef, list[UpstreamState]]:
    submitted = await provider.submit(request)
    ref = UpstreamRef(submitted.upstream_id, request, submitted.handle, time.time())
    return ref, await run_to_end(provider, ref)


async def fetch_image(http: httpx.AsyncClient, url: str) -> Image.Image:
    response = await http.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


# --- round trips ----------------------------------------------------------------------------


async def test_text_to_image_round_trip(
    emulator: FalEmulator, provider: FalProvider, http: httpx.AsyncClient
) -> None:
    emulator.knobs.queue_time = (0.06, 0.06)
    request = job(output_format="jpg", num_outputs=2, seed=5)

    ref, states = await submit_and_finish(provider, request)

    seen = [state.status for state in states]
    assert seen[0] is UpstreamStatus.QUEUED
    assert UpstreamStatus.RUNNING in seen
    final = states[-1]
    assert final.status is UpstreamStatus.SUCCEEDED
    assert final.seed == 5
    assert len(final.outputs) == 2
    for output in final.outputs:
        image = await fetch_image(http, output.url)
        assert (image.format, image.size) == ("JPEG", (512, 768))
        assert (output.content_type, output.width, output.height) == ("image/jpeg", 512, 768)
    assert emulator.ledger.ids() == [ref.upstream_id]
    assert emulator.ledger.entries[0].body == build_input(request)
    assert emulator.calls.count("POST") == 1


async def test_edit_round_trip_polls_under_the_base_path(
    emulator: FalEmulator, provider: FalProvider, http: httpx.AsyncClient, base_url: str
) -> None:
    request = job(input_images=("https://files.example.test/a.png",) * 4, output_format="png")

    ref, states = await submit_and_finish(provider, request)

    assert states[-1].status is UpstreamStatus.SUCCEEDED
    image = await fetch_image(http, states[-1].outputs[0].url)
    assert (image.format, image.size) == ("PNG", (512, 768))
    app_path = f"/fal-ai/flux-2/requests/{ref.upstream_id}"
    assert ref.handle["status_url"] == f"{base_url}{app_path}/status"
    assert [path for method, path, _ in emulator.calls.log if method == "POST"] == [
        "/fal-ai/flux-2/edit"
    ]
    gets = [p for m, p, _ in emulator.calls.log if m == "GET" and not p.startswith("/files/")]
    assert gets.count(f"{app_path}/status") == len(states)
    assert gets[-2:] == [f"{app_path}/status", app_path]  # then the result, once
    assert emulator.ledger.entries[0].body["image_urls"] == list(request.input_images)
    # The emulator reproduces fal: nothing lives under the endpoint's sub-path.
    wrong = await http.get(f"{base_url}/fal-ai/flux-2/edit/requests/{ref.upstream_id}/status")
    assert wrong.status_code == 404


async def test_lora_round_trip(
    emulator: FalEmulator, provider: FalProvider, http: httpx.AsyncClient
) -> None:
    loras = (Lora("https://files.example.test/s.safetensors", 0.7), Lora("owner/repo", 1.2))
    request = job(loras=loras, output_format="webp", width=1024, height=1024)

    ref, states = await submit_and_finish(provider, request)

    assert states[-1].status is UpstreamStatus.SUCCEEDED
    image = await fetch_image(http, states[-1].outputs[0].url)
    assert (image.format, image.size) == ("WEBP", (1024, 1024))
    assert emulator.calls.count("POST", "/fal-ai/flux-2/lora") == 1
    assert emulator.calls.count("GET", f"/fal-ai/flux-2/requests/{ref.upstream_id}/status") >= 1
    assert emulator.ledger.entries[0].body["loras"] == [
        {"path": "https://files.example.test/s.safetensors", "scale": 0.7},
        {"path": "owner/repo", "scale": 1.2},
    ]


async def test_the_returned_urls_are_used_not_rebuilt(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    submitted = await provider.submit(job())
    # A model id under which no URL could be rebuilt: only the handle's URLs can work.
    foreign = job(model="fal-ai/not-this-app")
    ref = UpstreamRef(submitted.upstream_id, foreign, submitted.handle)

    assert (await run_to_end(provider, ref))[-1].status is UpstreamStatus.SUCCEEDED
    assert emulator.calls.count("GET", "/fal-ai/not-this-app") == 0


async def test_without_a_handle_the_app_level_urls_are_built(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    request = job(input_images=("https://files.example.test/a.png",))
    submitted = await provider.submit(request)

    ref = UpstreamRef(submitted.upstream_id, request, handle={})
    assert (await run_to_end(provider, ref))[-1].status is UpstreamStatus.SUCCEEDED
    assert emulator.calls.count("GET", f"/fal-ai/flux-2/requests/{submitted.upstream_id}") >= 2
    assert emulator.calls.count("GET", "/edit/requests/") == 0


async def test_settings_model_overrides_the_catalog_model(
    emulator: FalEmulator, base_url: str, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator, "apps", frozenset({"fal-ai/flux-2-staging"}))
    provider = make_provider(emulator, base_url, http, model="fal-ai/flux-2-staging")

    ref, states = await submit_and_finish(provider, job(loras=(Lora("owner/repo"),)))

    assert states[-1].status is UpstreamStatus.SUCCEEDED
    assert emulator.calls.count("POST", "/fal-ai/flux-2-staging/lora") == 1
    assert emulator.requests[ref.upstream_id].app == "fal-ai/flux-2-staging"


# --- failures -------------------------------------------------------------------------------


async def test_submit_429_carries_retry_after_and_bills_nothing(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    emulator.knobs.burst_429, emulator.knobs.retry_after = 1, 3

    with pytest.raises(NotAccepted) as raised:
        await provider.submit(job())

    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 3
    assert len(emulator.ledger) == 0


async def test_poll_429_is_transient_with_retry_after(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    submitted = await provider.submit(job())
    emulator.knobs.burst_429, emulator.knobs.retry_after = 1, 2

    with pytest.raises(TransientError) as raised:
        await provider.poll(UpstreamRef(submitted.upstream_id, job(), submitted.handle))

    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 2


async def test_5xx_before_acceptance_is_not_accepted_and_not_billed(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    emulator.knobs.submit_5xx = 1

    with pytest.raises(NotAccepted, match="503"):
        await provider.submit(job())
    assert len(emulator.ledger) == 0

    submitted = await provider.submit(job())  # the burst is over: accepted, billed once
    assert emulator.ledger.ids() == [submitted.upstream_id]


async def test_poll_5xx_is_transient(emulator: FalEmulator, provider: FalProvider) -> None:
    submitted = await provider.submit(job())
    emulator.knobs.burst_5xx = 1

    with pytest.raises(TransientError, match="503"):
        await provider.poll(UpstreamRef(submitted.upstream_id, job(), submitted.handle))


async def test_hang_after_acceptance_is_an_unknown_outcome_billed_once(
    emulator: FalEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    emulator.knobs.hang_submit_after_accept = 0.8
    provider = make_provider(emulator, base_url, http, total_timeout_s=0.2)

    with pytest.raises(OutcomeUnknown):
        await provider.submit(job())

    assert len(emulator.ledger) == 1
    assert emulator.calls.count("POST") == 1  # no second submission


async def test_hanging_status_is_transient(
    emulator: FalEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = make_provider(emulator, base_url, http, total_timeout_s=0.2)
    submitted = await provider.submit(job())
    emulator.knobs.hang_polls = 0.6

    with pytest.raises(TransientError):
        await provider.poll(UpstreamRef(submitted.upstream_id, job(), submitted.handle))


async def test_bad_key_is_not_accepted(
    emulator: FalEmulator, base_url: str, http: httpx.AsyncClient
) -> None:
    provider = FalProvider(
        "fal", ProviderSettings(api_key=SecretStr("wrong"), base_url=base_url), http
    )
    with pytest.raises(NotAccepted, match="401"):
        await provider.submit(job())
    assert len(emulator.ledger) == 0


async def test_invalid_input_is_rejected_with_fal_detail(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    with pytest.raises(Rejected, match="greater_than_equal") as raised:
        await provider.submit(job(width=256))  # below fal's 512 minimum
    assert "image_size" in raised.value.message
    assert len(emulator.ledger) == 0


async def test_images_with_loras_are_not_sent(emulator: FalEmulator, provider: FalProvider) -> None:
    with pytest.raises(NotAccepted):
        await provider.submit(job(input_images=("https://x.test/a.png",), loras=(Lora("o/r"),)))
    assert emulator.calls.log == []


async def test_failed_run_is_an_upstream_error(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    emulator.knobs.failure_rate = 1.0

    _, states = await submit_and_finish(provider, job())

    assert states[-1].status is UpstreamStatus.FAILED
    assert states[-1].raw_status == "COMPLETED"
    assert states[-1].error_code is ErrorCode.UPSTREAM_ERROR
    assert "runner_server_error" in (states[-1].error_message or "")
    assert emulator.calls.count("GET", "/requests/") == len(states)  # no result fetch


async def test_nsfw_output_is_moderated(emulator: FalEmulator, provider: FalProvider) -> None:
    emulator.knobs.moderation_rate = 1.0

    _, states = await submit_and_finish(provider, job())

    assert states[-1].status is UpstreamStatus.FAILED
    assert states[-1].error_code is ErrorCode.MODERATED
    assert states[-1].outputs == ()


async def test_without_the_safety_checker_nothing_is_moderated(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    emulator.knobs.moderation_rate = 1.0

    _, states = await submit_and_finish(provider, job(disable_safety_checker=True))

    assert states[-1].status is UpstreamStatus.SUCCEEDED
    assert emulator.ledger.entries[0].body["enable_safety_checker"] is False


async def test_malformed_status_is_a_protocol_violation(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    submitted = await provider.submit(job())
    emulator.knobs.malformed = 1

    with pytest.raises(ProtocolViolation, match="malformed JSON"):
        await provider.poll(UpstreamRef(submitted.upstream_id, job(), submitted.handle))


async def test_unknown_status_is_a_protocol_violation(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    submitted = await provider.submit(job())
    emulator.knobs.unknown_status = 1

    with pytest.raises(ProtocolViolation, match="undocumented status 'SUSPENDED'"):
        await provider.poll(UpstreamRef(submitted.upstream_id, job(), submitted.handle))


async def test_outputs_expire_and_can_be_served_once(
    emulator: FalEmulator, provider: FalProvider, http: httpx.AsyncClient
) -> None:
    emulator.knobs.serve_outputs_once = True
    _, states = await submit_and_finish(provider, job())
    url = states[-1].outputs[0].url

    assert (await http.get(url)).status_code == 200
    assert (await http.get(url)).status_code == 404


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_a_running_job(emulator: FalEmulator, provider: FalProvider) -> None:
    emulator.knobs.latency = (2.0, 2.0)
    request = job()
    submitted = await provider.submit(request)
    ref = UpstreamRef(submitted.upstream_id, request, submitted.handle)
    assert (await provider.poll(ref)).status is UpstreamStatus.RUNNING

    assert isinstance(provider, Cancellable)
    await provider.cancel(ref)

    cancel_path = f"/fal-ai/flux-2/requests/{ref.upstream_id}/cancel"
    assert emulator.calls.count("PUT", cancel_path) == 1
    state = await provider.poll(ref)
    assert state.status is UpstreamStatus.CANCELED
    assert emulator.requests[ref.upstream_id].cancelled_at is not None


async def test_cancel_a_queued_job(emulator: FalEmulator, provider: FalProvider) -> None:
    emulator.knobs.queue_time = (2.0, 2.0)
    submitted = await provider.submit(job())
    ref = UpstreamRef(submitted.upstream_id, job(), submitted.handle)
    assert (await provider.poll(ref)).status is UpstreamStatus.QUEUED

    await provider.cancel(ref)

    assert (await provider.poll(ref)).status is UpstreamStatus.CANCELED


async def test_cancel_after_completion_is_harmless(
    emulator: FalEmulator, provider: FalProvider
) -> None:
    ref, states = await submit_and_finish(provider, job())
    assert states[-1].status is UpstreamStatus.SUCCEEDED

    await provider.cancel(ref)  # ALREADY_COMPLETED

    assert emulator.calls.count("PUT") == 1
    assert (await provider.poll(ref)).status is UpstreamStatus.SUCCEEDED


async def test_cancel_of_an_unknown_request_is_transient(provider: FalProvider) -> None:
    ref = UpstreamRef("no-such-request", job())
    with pytest.raises(TransientError, match="404"):
        await provider.cancel(ref)


# --- webhooks -------------------------------------------------------------------------------


class WebhookInbox:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        return Response(status_code=200)

    async def wait_for(self, count: int, limit: float = 5.0) -> None:
        deadline = time.monotonic() + limit
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"only {len(self.received)} webhooks arrived"
            await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def inbox_served() -> Iterator[tuple[WebhookInbox, str]]:
    inbox = WebhookInbox()
    with serve(inbox.app) as url:
        yield inbox, f"{url}/hook"


@pytest.fixture
def inbox(inbox_served: tuple[WebhookInbox, str]) -> tuple[WebhookInbox, str]:
    inbox_served[0].received.clear()
    return inbox_served


async def test_webhook_is_requested_delivered_and_read_as_a_hint(
    emulator: FalEmulator, provider: FalProvider, inbox: tuple[WebhookInbox, str]
) -> None:
    receiver, hook_url = inbox
    emulator.knobs.webhook_duplicate = True
    request = job(webhook_url=hook_url)

    submitted = await provider.submit(request)

    assert emulator.requests[submitted.upstream_id].webhook_url == hook_url  # ?fal_webhook=
    await receiver.wait_for(2)
    assert isinstance(provider, WebhookReceiver)
    updates = [provider.parse_webhook(headers, body) for headers, body in receiver.received]
    assert {update.upstream_id for update in updates} == {submitted.upstream_id}
    assert all(not update.verified and update.state is None for update in updates)
    assert updates[0].event_id == updates[1].event_id  # a replay deduplicates
    # The hint is confirmed with one poll, which sees the finished job.
    ref = UpstreamRef(submitted.upstream_id, request, submitted.handle)
    assert (await provider.poll(ref)).status is UpstreamStatus.SUCCEEDED


async def test_failed_job_webhook_is_still_only_a_hint(
    emulator: FalEmulator, provider: FalProvider, inbox: tuple[WebhookInbox, str]
) -> None:
    receiver, hook_url = inbox
    emulator.knobs.failure_rate = 1.0

    submitted = await provider.submit(job(webhook_url=hook_url))

    await receiver.wait_for(1)
    update = provider.parse_webhook(*receiver.received[0])
    assert (update.upstream_id, update.verified, update.state) == (
        submitted.upstream_id,
        False,
        None,
    )
    assert update.event_id == f"{submitted.upstream_id}:ERROR"


async def test_no_webhook_without_a_webhook_url(
    emulator: FalEmulator, provider: FalProvider, inbox: tuple[WebhookInbox, str]
) -> None:
    _, states = await submit_and_finish(provider, job())
    await asyncio.sleep(0.05)
    assert states[-1].status is UpstreamStatus.SUCCEEDED
    assert inbox[0].received == []
    assert emulator.webhooks_sent == []


# --- configuration --------------------------------------------------------------------------


def test_poll_timing_defaults_and_overrides(http: httpx.AsyncClient) -> None:
    settings = ProviderSettings(api_key=SecretStr("k"))
    assert FalProvider("fal", settings, http).poll_timing() == PollTiming(2.0, 1.5, 8.0)
    tuned = settings.model_copy(update={"first_poll_after_s": 0.5, "poll_cap_s": 3.0})
    assert FalProvider("fal", tuned, http).poll_timing() == PollTiming(0.5, 1.5, 3.0)


def test_registry_and_create(http: httpx.AsyncClient) -> None:
    assert load_factory("fal") is create
    provider = create("fal-eu", ProviderSettings(api_key=SecretStr("k")), http)
    assert provider.name == "fal-eu"
    assert provider.capabilities(MODEL).max_input_images == 4
    with pytest.raises(ConfigError, match="api_key"):
        create("fal", ProviderSettings(), http)
