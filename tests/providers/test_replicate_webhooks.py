"""Replicate webhooks: signed deliveries from the emulator verified by the adapter.

The emulator signs by hand from the Standard Webhooks spec, the adapter verifies with the
``standardwebhooks`` library, and the official ``replicate`` SDK's validator checks the emulator:
three independent implementations of one signature scheme.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import httpx_aiohttp
import pytest
import replicate
from replicate.webhook import WebhookSigningSecret

from app.providers.base import (
    UpstreamRef,
    UpstreamRequest,
    UpstreamStatus,
    WebhookRefused,
)
from app.providers.replicate import ReplicateProvider, create
from tests.emulators.replicate import ReplicateEmulator, WebhookSink, sign
from tests.emulators.support import Knobs

PAYLOADS = Path(__file__).parent / "payloads" / "replicate"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport()) as client:
        yield client


@pytest.fixture
def sink() -> Iterator[tuple[WebhookSink, str]]:
    receiver = WebhookSink()
    with receiver.serve() as url:
        yield receiver, url


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ReplicateEmulator, str]]:
    emu = ReplicateEmulator()
    with emu.serve() as base_url:
        yield emu, base_url


@pytest.fixture
def emulator(served: tuple[ReplicateEmulator, str]) -> tuple[ReplicateEmulator, str]:
    served[0].reset(Knobs(latency=(0.03, 0.05), seed=3))
    return served


def adapter(emu: ReplicateEmulator, base_url: str, http: httpx.AsyncClient) -> ReplicateProvider:
    return create("replicate", emu.provider_settings(base_url), http)


def offline_adapter(secret: str | None = SECRET) -> ReplicateProvider:
    settings = ReplicateEmulator().provider_settings("http://127.0.0.1:9", webhook_secret=secret)
    return create("replicate", settings, httpx.AsyncClient())


def fox(hook: str) -> UpstreamRequest:
    return UpstreamRequest(
        job_id="img_01JD8X3Q5W6Z9K2M4N7P0R1S3T",
        model="black-forest-labs/flux-2-dev",
        prompt="a red fox in fresh snow",
        width=1024,
        height=1024,
        webhook_url=hook,
    )


def signed(body: bytes, msg_id: str = "msg_2kQ", *, age: float = 0.0) -> dict[str, str]:
    timestamp = str(int(time.time() - age))
    return {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": timestamp,
        "Webhook-Signature": sign(SECRET, msg_id, timestamp, body),
    }


async def test_signed_webhooks_apply_in_order(
    emulator: tuple[ReplicateEmulator, str],
    sink: tuple[WebhookSink, str],
    http: httpx.AsyncClient,
) -> None:
    emu, base_url = emulator
    receiver, hook = sink
    provider = adapter(emu, base_url, http)

    submitted = await provider.submit(fox(hook))
    deliveries = await receiver.wait_for(2)

    assert emu.ledger.entries[0].body["webhook_events_filter"] == ["start", "completed"]
    updates = [provider.parse_webhook(headers, body) for headers, body in deliveries]
    assert [u.verified for u in updates] == [True, True]
    assert {u.upstream_id for u in updates} == {submitted.upstream_id}
    assert [u.state.status for u in updates if u.state] == [
        UpstreamStatus.RUNNING,
        UpstreamStatus.SUCCEEDED,
    ]
    assert [u.event_id for u in updates] == [h["webhook-id"] for h, _ in deliveries]
    assert len({u.event_id for u in updates}) == 2
    final = updates[-1].state
    assert final is not None
    assert (await http.get(final.outputs[0].url)).status_code == 200


async def test_official_sdk_validates_the_emulators_signatures(
    emulator: tuple[ReplicateEmulator, str],
    sink: tuple[WebhookSink, str],
    http: httpx.AsyncClient,
) -> None:
    emu, base_url = emulator
    receiver, hook = sink
    await adapter(emu, base_url, http).submit(fox(hook))
    secret = WebhookSigningSecret(key=emu.webhook_secret)

    for headers, body in await receiver.wait_for(2):
        replicate.webhooks.validate(headers=headers, body=body.decode(), secret=secret)


async def test_unsigned_delivery_is_refused(
    emulator: tuple[ReplicateEmulator, str],
    sink: tuple[WebhookSink, str],
    http: httpx.AsyncClient,
) -> None:
    emu, base_url = emulator
    receiver, hook = sink
    emu.knobs.webhook_signed = False
    provider = adapter(emu, base_url, http)
    await provider.submit(fox(hook))

    deliveries = await receiver.wait_for(2)

    assert deliveries
    for headers, body in deliveries:
        with pytest.raises(WebhookRefused, match="signature"):
            provider.parse_webhook(headers, body)


async def test_duplicate_delivery_keeps_its_event_id(
    emulator: tuple[ReplicateEmulator, str],
    sink: tuple[WebhookSink, str],
    http: httpx.AsyncClient,
) -> None:
    emu, base_url = emulator
    receiver, hook = sink
    emu.knobs.webhook_duplicate = True
    provider = adapter(emu, base_url, http)
    await provider.submit(fox(hook))

    deliveries = await receiver.wait_for(4)
    updates = [provider.parse_webhook(headers, body) for headers, body in deliveries]

    assert len(updates) == 4
    assert updates[0].event_id == updates[1].event_id  # a replay: the gateway drops it
    assert updates[2].event_id == updates[3].event_id
    assert updates[1].event_id != updates[2].event_id


async def test_stale_processing_arrives_after_the_terminal_update(
    emulator: tuple[ReplicateEmulator, str],
    sink: tuple[WebhookSink, str],
    http: httpx.AsyncClient,
) -> None:
    emu, base_url = emulator
    receiver, hook = sink
    emu.knobs.webhook_out_of_order = True
    provider = adapter(emu, base_url, http)
    submitted = await provider.submit(fox(hook))

    updates = [provider.parse_webhook(h, b) for h, b in await receiver.wait_for(2)]
    statuses = [u.state.status for u in updates if u.state]

    # Both verify; the gateway orders them (a terminal state is never overwritten).
    assert statuses == [UpstreamStatus.SUCCEEDED, UpstreamStatus.RUNNING]
    assert (await provider.poll(UpstreamRef(submitted.upstream_id, fox(hook)))).status is (
        UpstreamStatus.SUCCEEDED
    )


async def test_canceled_prediction_sends_a_completed_webhook(
    emulator: tuple[ReplicateEmulator, str],
    sink: tuple[WebhookSink, str],
    http: httpx.AsyncClient,
) -> None:
    emu, base_url = emulator
    receiver, hook = sink
    emu.knobs.latency = (5.0, 5.0)
    provider = adapter(emu, base_url, http)
    submitted = await provider.submit(fox(hook))
    await receiver.wait_for(1)

    await provider.cancel(UpstreamRef(submitted.upstream_id, fox(hook)))
    updates = [provider.parse_webhook(h, b) for h, b in await receiver.wait_for(2)]

    assert [u.state.raw_status for u in updates if u.state] == ["processing", "canceled"]


def test_documented_prediction_body_verifies() -> None:
    body = (PAYLOADS / "prediction_succeeded.json").read_bytes()

    update = offline_adapter().parse_webhook(signed(body, "msg_p5jXN8AQM9LWM0D4loKWxJek"), body)

    assert update.verified
    assert update.upstream_id == json.loads(body)["id"]
    assert update.event_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert update.state is not None
    assert update.state.status is UpstreamStatus.SUCCEEDED
    assert update.state.outputs[0].url == "https://replicate.delivery/xezq/Abc123/out-0.webp"


def test_replayed_webhook_id_yields_the_same_event_id() -> None:
    body = (PAYLOADS / "prediction_processing.json").read_bytes()
    provider = offline_adapter()

    first = provider.parse_webhook(signed(body, "msg_same"), body)
    replay = provider.parse_webhook(signed(body, "msg_same"), body)

    assert first.event_id == replay.event_id == "msg_same"


def test_stale_timestamp_is_refused() -> None:
    body = (PAYLOADS / "prediction_succeeded.json").read_bytes()

    with pytest.raises(WebhookRefused, match="too old"):
        offline_adapter().parse_webhook(signed(body, age=301), body)


def test_timestamp_inside_the_window_is_accepted() -> None:
    body = (PAYLOADS / "prediction_succeeded.json").read_bytes()

    assert offline_adapter().parse_webhook(signed(body, age=240), body).verified


@pytest.mark.parametrize("missing", ["Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"])
def test_missing_header_is_refused(missing: str) -> None:
    body = (PAYLOADS / "prediction_succeeded.json").read_bytes()
    headers = signed(body)
    del headers[missing]

    with pytest.raises(WebhookRefused, match="Missing required headers"):
        offline_adapter().parse_webhook(headers, body)


def test_tampered_body_is_refused() -> None:
    body = (PAYLOADS / "prediction_failed_nsfw.json").read_bytes()
    headers = signed(body)
    tampered = body.replace(b'"failed"', b'"succeeded"')

    with pytest.raises(WebhookRefused, match="signature"):
        offline_adapter().parse_webhook(headers, tampered)


@pytest.mark.parametrize("signature", ["v1", "v1,not base64!", "v2,AAAA", "", "v1,AAAA v1"])
def test_malformed_signature_is_refused(signature: str) -> None:
    body = (PAYLOADS / "prediction_succeeded.json").read_bytes()
    headers = signed(body) | {"Webhook-Signature": signature}

    with pytest.raises(WebhookRefused):
        offline_adapter().parse_webhook(headers, body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "unreadable"),
        (b'["a list"]', "not a prediction"),
        (b'{"id": "x", "status": "booting"}', "undocumented status"),
        (b"\xff\xfe", "unreadable"),
    ],
)
def test_signed_garbage_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(WebhookRefused, match=reason):
        offline_adapter().parse_webhook(signed(body), body)


def test_without_a_secret_nothing_is_trusted() -> None:
    body = (PAYLOADS / "prediction_succeeded.json").read_bytes()

    with pytest.raises(WebhookRefused, match="no webhook secret"):
        offline_adapter(secret=None).parse_webhook(signed(body), body)
