"""The OpenAI-style adapter against the emulator in both dialects, over real loopback HTTP."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx_aiohttp
import pytest
from PIL import Image

from app.config import ConfigError, ProviderSettings
from app.providers.base import (
    Cancellable,
    ErrorCode,
    Lora,
    NotAccepted,
    OutcomeUnknown,
    ProtocolViolation,
    Rejected,
    UpstreamRef,
    UpstreamRequest,
    UpstreamStatus,
    WebhookReceiver,
)
from app.providers.openai_images import OpenAIImagesProvider, create
from app.providers.openai_images.mapping import deepinfra_body, together_body
from tests.emulators.openai_images import OpenAIImagesEmulator
from tests.emulators.support import Knobs

DIALECTS = ["together", "deepinfra"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[OpenAIImagesEmulator, str]]]:
    together, deepinfra = OpenAIImagesEmulator("together"), OpenAIImagesEmulator("deepinfra")
    with together.serve() as together_url, deepinfra.serve() as deepinfra_url:
        yield {"together": (together, together_url), "deepinfra": (deepinfra, deepinfra_url)}


@pytest.fixture
def together(
    servers: dict[str, tuple[OpenAIImagesEmulator, str]],
) -> tuple[OpenAIImagesEmulator, str]:
    servers["together"][0].reset(Knobs(latency=(0.01, 0.03)))
    return servers["together"]


@pytest.fixture
def deepinfra(
    servers: dict[str, tuple[OpenAIImagesEmulator, str]],
) -> tuple[OpenAIImagesEmulator, str]:
    servers["deepinfra"][0].reset(Knobs(latency=(0.01, 0.03)))
    return servers["deepinfra"]


@pytest.fixture(params=DIALECTS)
def either(
    request: pytest.FixtureRequest, servers: dict[str, tuple[OpenAIImagesEmulator, str]]
) -> tuple[OpenAIImagesEmulator, str]:
    emulator, base_url = servers[request.param]
    emulator.reset(Knobs(latency=(0.01, 0.03)))
    return emulator, base_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport()) as client:
        yield client


def provider_for(
    emulator: OpenAIImagesEmulator, base_url: str, http: httpx.AsyncClient, **settings: Any
) -> OpenAIImagesProvider:
    settings.setdefault("api_key", emulator.api_key)
    conf = ProviderSettings(kind="openai_images", base_url=base_url, **settings)
    return create(emulator.dialect.name, conf, http)


def request(**fields: Any) -> UpstreamRequest:
    values: dict[str, Any] = {"prompt": "a red fox", "width": 640, "height": 384}
    values["output_format"] = "jpg"
    values.update(fields)
    return UpstreamRequest(job_id="img_test", model="flux-2-dev", **values)


async def test_together_round_trip_with_url_outputs(
    together: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = together
    provider = provider_for(emulator, base_url, http)
    job = request(output_format="png", num_outputs=2, seed=9)
    submitted = await provider.submit(job)
    assert submitted.state is not None
    assert submitted.state.status is UpstreamStatus.SUCCEEDED
    assert submitted.state.seed == 9
    assert emulator.ledger.ids() == [submitted.upstream_id]
    assert emulator.ledger.entries[0].body == together_body(job, "black-forest-labs/FLUX.2-dev")
    assert len(submitted.state.outputs) == 2
    for output in submitted.state.outputs:
        assert output.content_type == "image/png"
        image = await http.get(output.url)
        assert image.status_code == 200
        with Image.open(io.BytesIO(image.content)) as decoded:
            assert (decoded.format, decoded.size) == ("PNG", (640, 384))
    assert emulator.user_agents == ["imagegate/0.1 (+openai_images)"]


async def test_together_reference_images_and_loras_reach_the_upstream(
    together: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = together
    job = request(
        input_images=("https://example.com/car.jpg",),
        loras=(Lora("https://example.com/s.safetensors", 0.6),),
        disable_safety_checker=True,
    )
    submitted = await provider_for(emulator, base_url, http).submit(job)
    assert submitted.state is not None
    assert submitted.state.outputs[0].content_type == "image/jpeg"
    body = emulator.ledger.entries[0].body
    assert body["reference_images"] == ["https://example.com/car.jpg"]
    assert body["loras"] == [{"path": "https://example.com/s.safetensors", "scale": 0.6}]
    assert body["disable_safety_checker"] is True


async def test_deepinfra_round_trip_with_base64_outputs(
    deepinfra: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = deepinfra
    provider = provider_for(emulator, base_url, http)
    job = request(width=768, height=512, seed=3)
    submitted = await provider.submit(job)
    assert submitted.upstream_id.startswith("local-")  # DeepInfra answers carry no id
    assert submitted.state is not None
    assert submitted.state.status is UpstreamStatus.SUCCEEDED
    assert submitted.state.seed is None  # DeepInfra takes no seed, so ours says nothing
    (output,) = submitted.state.outputs
    header, _, data = output.url.partition(",")
    assert header == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as decoded:
        assert (decoded.format, decoded.size) == ("JPEG", (768, 512))
    assert len(emulator.ledger) == 1
    assert emulator.ledger.entries[0].body == deepinfra_body(job, "black-forest-labs/FLUX-2-dev")


async def test_poll_is_a_protocol_violation(
    together: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = together
    provider = provider_for(emulator, base_url, http)
    with pytest.raises(ProtocolViolation, match="synchronous"):
        await provider.poll(UpstreamRef("gen-1", request()))
    assert emulator.calls.log == []


async def test_429_is_not_accepted_with_retry_after(
    either: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = either
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 12
    with pytest.raises(NotAccepted) as caught:
        await provider_for(emulator, base_url, http).submit(request())
    assert caught.value.retry_after is not None
    assert caught.value.retry_after >= 12
    assert len(emulator.ledger) == 0


@pytest.mark.parametrize("knob", ["submit_5xx", "burst_5xx", "failure_rate"])
async def test_5xx_before_acceptance_is_not_accepted_and_not_paid(
    knob: str, either: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = either
    setattr(emulator.knobs, knob, 1.0 if knob == "failure_rate" else 1)
    with pytest.raises(NotAccepted):
        await provider_for(emulator, base_url, http).submit(request())
    assert len(emulator.ledger) == 0


async def test_hang_after_acceptance_is_outcome_unknown_and_paid_once(
    either: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = either
    emulator.knobs.hang_submit_after_accept = 1.0
    provider = provider_for(emulator, base_url, http, total_timeout_s=0.3)
    with pytest.raises(OutcomeUnknown):
        await provider.submit(request())
    assert len(emulator.ledger) == 1
    assert emulator.calls.count("POST") == 1


async def test_malformed_answer_after_acceptance_is_outcome_unknown(
    either: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = either
    emulator.knobs.malformed = 1
    with pytest.raises(OutcomeUnknown, match="malformed JSON"):
        await provider_for(emulator, base_url, http).submit(request())
    assert len(emulator.ledger) == 1


async def test_moderation_is_a_failed_state_not_an_error(
    either: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = either
    emulator.knobs.moderation_rate = 1.0
    submitted = await provider_for(emulator, base_url, http).submit(request())
    assert submitted.state is not None
    assert submitted.state.status is UpstreamStatus.FAILED
    assert submitted.state.error_code is ErrorCode.MODERATED
    assert submitted.state.error_message
    assert "NSFW" in submitted.state.error_message
    assert len(emulator.ledger) == 1


async def test_invalid_input_is_rejected(
    either: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = either
    with pytest.raises(Rejected):
        await provider_for(emulator, base_url, http).submit(request(width=2048))
    assert len(emulator.ledger) == 0


async def test_bad_key_is_not_accepted(
    either: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = either
    with pytest.raises(NotAccepted, match="401"):
        await provider_for(emulator, base_url, http, api_key="wrong").submit(request())


async def test_a_format_the_dialect_cannot_produce_never_reaches_it(
    deepinfra: tuple[OpenAIImagesEmulator, str], http: httpx.AsyncClient
) -> None:
    emulator, base_url = deepinfra
    with pytest.raises(NotAccepted, match="png"):
        await provider_for(emulator, base_url, http).submit(request(output_format="png"))
    assert emulator.calls.log == []


def test_capabilities_per_dialect(http: httpx.AsyncClient) -> None:
    conf = ProviderSettings(kind="openai_images", api_key="k")
    together = create("together", conf, http)
    deepinfra = create("deepinfra", conf, http)
    for provider in (together, deepinfra):
        assert not isinstance(provider, Cancellable)
        assert not isinstance(provider, WebhookReceiver)
    caps = together.capabilities("flux-2-dev")
    assert (caps.max_input_images, caps.max_loras, caps.max_outputs) == (1, 1, 4)
    assert (caps.min_side, caps.max_side, caps.formats) == (256, 1440, frozenset({"jpg", "png"}))
    assert (caps.cancel, caps.webhooks) == (False, False)
    caps = deepinfra.capabilities("flux-2-dev")
    assert (caps.max_input_images, caps.max_loras, caps.max_outputs) == (0, 0, 1)
    assert caps.formats == frozenset({"jpg"})


def test_configuration_errors(http: httpx.AsyncClient) -> None:
    with pytest.raises(ConfigError, match="api_key"):
        create("together", ProviderSettings(kind="openai_images"), http)
    with pytest.raises(ConfigError, match="cannot tell"):
        create("images", ProviderSettings(kind="openai_images", api_key="k"), http)
