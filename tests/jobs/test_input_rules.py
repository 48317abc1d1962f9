"""Every input rule of `api.md`, table-driven: a violation is a 422 problem naming the field.

Each row sends one violating ``POST /v1/images`` (or list query) and checks the status, the
``application/problem+json`` content type, the problem ``code`` and the exact ``errors[*].loc``.
The positive rows check what is accepted and the normalised input that is echoed back.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Gateway
from tests.helpers import body, new_key

PROBLEM = "application/problem+json"
KNOWN_MODELS = ("black-forest-labs/flux-2-dev", "flux-2-dev")
Payload = dict[str, Any]


def top(**fields: Any) -> Payload:
    """The default body with top-level fields replaced (``None`` removes one)."""
    payload = body()
    for name, value in fields.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def without_prompt(**fields: Any) -> Payload:
    payload = body(**fields)
    del payload["input"]["prompt"]
    return payload


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def nested(depth: int) -> Payload:
    value: Payload = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


URL = "https://example.com/ref.jpg"
LORA = {"path": "https://example.com/style.safetensors", "scale": 0.8}
TEN_MB = 10 * 1024 * 1024


def problem_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"].endswith(f"/{code}")
    assert problem["title"] and problem["detail"]
    return problem


def locs(problem: dict[str, Any]) -> list[list[str | int]]:
    return [error["loc"] for error in problem.get("errors") or []]


async def writer(gateway: Gateway) -> tuple[str, dict[str, str]]:
    key = await new_key(gateway.runtime)
    return key, {"Authorization": f"Bearer {key}"}


# --- POST /v1/images: one row per violated rule ---------------------------------------------

INVALID_BODIES: list[Any] = [
    # model
    pytest.param(top(model="acme/nonexistent"), ["model"], id="model-unknown"),
    pytest.param(top(model=""), ["model"], id="model-empty"),
    pytest.param(top(model=None), ["model"], id="model-missing"),
    pytest.param(top(model=7), ["model"], id="model-not-a-string"),
    pytest.param(top(model="flux-2-dev\x00"), ["model"], id="model-nul"),
    # prompt
    pytest.param(without_prompt(), ["input", "prompt"], id="prompt-missing"),
    pytest.param(body(""), ["input", "prompt"], id="prompt-empty"),
    pytest.param(body(" \t\n  "), ["input", "prompt"], id="prompt-whitespace"),
    pytest.param(body("x" * 10_001), ["input", "prompt"], id="prompt-10001-chars"),
    pytest.param(body(42), ["input", "prompt"], id="prompt-a-number"),
    pytest.param(body("a red\x00fox"), ["input", "prompt"], id="prompt-nul"),
    pytest.param(top(input=None), ["input"], id="input-missing"),
    pytest.param(top(input="a red fox"), ["input"], id="input-not-an-object"),
    # input_images
    pytest.param(body(input_images=[URL] * 5), ["input", "input_images"], id="images-5"),
    pytest.param(
        body(input_images=[URL, URL, "not a url"]),
        ["input", "input_images", 2],
        id="images-not-a-url",
    ),
    pytest.param(
        body(input_images=["ftp://example.com/ref.jpg"]),
        ["input", "input_images", 0],
        id="images-ftp",
    ),
    pytest.param(
        body(input_images=[URL, "data:text/plain;base64,aGVsbG8="]),
        ["input", "input_images", 1],
        id="images-data-url-text-plain",
    ),
    pytest.param(
        body(input_images=["data:image/svg+xml;base64,PHN2Zz48L3N2Zz4="]),
        ["input", "input_images", 0],
        id="images-data-url-svg",
    ),
    pytest.param(
        body(input_images=["data:image/png;base64,!!!not*base64!!!"]),
        ["input", "input_images", 0],
        id="images-invalid-base64",
    ),
    pytest.param(
        body(input_images=[data_url(b"\0" * (TEN_MB + 1))]),
        ["input", "input_images", 0],
        id="images-data-url-over-10mb",
    ),
    pytest.param(body(input_images=URL), ["input", "input_images"], id="images-not-a-list"),
    pytest.param(
        body(input_images=[URL, "https://example.com/a\x00.png"]),
        ["input", "input_images", 1],
        id="images-nul",
    ),
    pytest.param(
        body(input_images=["https://127.0.0.1/ref.png"], aspect_ratio="match_input_image"),
        ["input", "input_images", 0],
        id="images-loopback-fetched-for-size",
    ),
    # aspect_ratio, width, height
    pytest.param(body(aspect_ratio="7:5"), ["input", "aspect_ratio"], id="aspect-unknown"),
    pytest.param(
        body(aspect_ratio="match_input_image"),
        ["input", "aspect_ratio"],
        id="aspect-match-input-without-images",
    ),
    pytest.param(
        body(aspect_ratio="custom", height=512), ["input", "width"], id="custom-without-width"
    ),
    pytest.param(
        body(aspect_ratio="custom", width=512), ["input", "height"], id="custom-without-height"
    ),
    pytest.param(
        body(aspect_ratio="custom", width=2065, height=1024),
        ["input", "width"],
        id="width-2065-rounds-to-2080",
    ),
    pytest.param(
        body(aspect_ratio="custom", width=1024, height=230),
        ["input", "height"],
        id="height-230-rounds-to-224",
    ),
    pytest.param(body(width=4096, height=1024), ["input", "width"], id="implied-custom-4096"),
    pytest.param(body(width=0, height=1024), ["input", "width"], id="implied-custom-width-0"),
    pytest.param(body(width=-512, height=512), ["input", "width"], id="implied-custom-negative"),
    pytest.param(
        body(aspect_ratio="1:1", width=2**70), ["input", "width"], id="width-beyond-64-bits"
    ),
    pytest.param(
        body(height=-(2**63) - 1, width=1024), ["input", "height"], id="height-below-64-bits"
    ),
    pytest.param(body(aspect_ratio="16:9", height=70_000), ["input", "height"], id="height-absurd"),
    # seed
    pytest.param(body(seed=-2), ["input", "seed"], id="seed-minus-2"),
    pytest.param(body(seed=2_147_483_648), ["input", "seed"], id="seed-2147483648"),
    pytest.param(body(seed="42x"), ["input", "seed"], id="seed-not-a-number"),
    # output
    pytest.param(body(output_format="gif"), ["input", "output_format"], id="format-gif"),
    pytest.param(body(output_quality=-1), ["input", "output_quality"], id="quality-minus-1"),
    pytest.param(body(output_quality=101), ["input", "output_quality"], id="quality-101"),
    pytest.param(body(num_outputs=0), ["input", "num_outputs"], id="num-outputs-0"),
    pytest.param(body(num_outputs=5), ["input", "num_outputs"], id="num-outputs-5"),
    pytest.param(body(num_outputs="two"), ["input", "num_outputs"], id="num-outputs-two"),
    # loras
    pytest.param(body(loras=[LORA] * 4), ["input", "loras"], id="loras-4"),
    pytest.param(
        body(loras=[LORA, {"path": "s3://bucket/style.safetensors"}]),
        ["input", "loras", 1, "path"],
        id="lora-path-s3",
    ),
    pytest.param(
        body(loras=[{"path": "/etc/passwd", "scale": 1}]),
        ["input", "loras", 0, "path"],
        id="lora-path-local",
    ),
    pytest.param(body(loras=[{"scale": 1}]), ["input", "loras", 0, "path"], id="lora-no-path"),
    pytest.param(
        body(loras=[{"path": "https://example.com/\x00"}]),
        ["input", "loras", 0, "path"],
        id="lora-path-nul",
    ),
    # webhook
    pytest.param(top(webhook="http://example.com/hook"), ["webhook"], id="webhook-http"),
    pytest.param(top(webhook="ftp://example.com/hook"), ["webhook"], id="webhook-ftp"),
    pytest.param(top(webhook="not a url"), ["webhook"], id="webhook-not-a-url"),
    pytest.param(top(webhook="https://127.0.0.1/hook"), ["webhook"], id="webhook-loopback"),
    pytest.param(top(webhook="https://[::1]/hook"), ["webhook"], id="webhook-loopback-v6"),
    pytest.param(top(webhook="https://10.1.2.3/hook"), ["webhook"], id="webhook-private"),
    pytest.param(
        top(webhook="https://169.254.169.254/latest/meta-data"), ["webhook"], id="webhook-metadata"
    ),
    pytest.param(top(webhook="https://example.com:8443/hook"), ["webhook"], id="webhook-port"),
    pytest.param(
        top(webhook="https://user:secret@example.com/hook"), ["webhook"], id="webhook-userinfo"
    ),
    pytest.param(top(webhook="https://example.com/\x00"), ["webhook"], id="webhook-nul"),
    pytest.param(top(webhook_events=["exploded"]), ["webhook_events", 0], id="event-unknown"),
    pytest.param(
        top(webhook_events=["completed", "done"]), ["webhook_events", 1], id="event-unknown-2nd"
    ),
    # routing
    pytest.param(top(routing={"strategy": "random"}), ["routing", "strategy"], id="strategy"),
    pytest.param(
        top(routing={"max_cost_usd": "-0.01"}), ["routing", "max_cost_usd"], id="max-cost-negative"
    ),
    pytest.param(top(routing={"max_cost_usd": 0}), ["routing", "max_cost_usd"], id="max-cost-0"),
    pytest.param(
        top(routing={"max_cost_usd": "cheap"}), ["routing", "max_cost_usd"], id="max-cost-text"
    ),
    pytest.param(top(routing={"fastest": True}), ["routing", "fastest"], id="routing-unknown"),
    pytest.param(
        top(routing={"providers": ["simulator\x00"]}),
        ["routing", "providers", 0],
        id="routing-provider-nul",
    ),
    # metadata
    pytest.param(top(metadata={"blob": "x" * 4096}), ["metadata"], id="metadata-over-4kb"),
    pytest.param(top(metadata="winter"), ["metadata"], id="metadata-a-string"),
    pytest.param(top(metadata=["winter"]), ["metadata"], id="metadata-a-list"),
    pytest.param(top(metadata={"n": 2**70}), ["metadata"], id="metadata-int-over-64-bits"),
    pytest.param(top(metadata={"k\x00": 1}), ["metadata"], id="metadata-nul-key"),
    pytest.param(top(metadata={"k": ["\x00"]}), ["metadata"], id="metadata-nul-value"),
    pytest.param(top(metadata=nested(300)), ["metadata"], id="metadata-nested-300-deep"),
    # extra fields are refused
    pytest.param(top(colour="red"), ["colour"], id="unknown-top-level-field"),
    pytest.param(body(colour="red"), ["input", "colour"], id="unknown-input-field"),
]


@pytest.mark.parametrize(("payload", "loc"), INVALID_BODIES)
async def test_invalid_body_is_422_naming_the_field(
    gateway: Gateway, payload: Payload, loc: list[str | int]
) -> None:
    _, headers = await writer(gateway)
    response = await gateway.http.post("/v1/images", json=payload, headers=headers)
    problem = problem_of(response, 422, "invalid_input")
    assert locs(problem) == [loc]
    assert problem["errors"][0]["msg"]


async def test_unknown_model_lists_the_known_models(gateway: Gateway) -> None:
    _, headers = await writer(gateway)
    response = await gateway.http.post(
        "/v1/images", json=top(model="acme/nonexistent"), headers=headers
    )
    problem = problem_of(response, 422, "invalid_input")
    message = problem["errors"][0]["msg"]
    assert "acme/nonexistent" in message
    for model in KNOWN_MODELS:
        assert model in message


async def test_every_field_error_is_reported(gateway: Gateway) -> None:
    _, headers = await writer(gateway)
    payload = body(num_outputs=9, output_quality=500)
    payload["routing"] = {"strategy": "slowest"}
    response = await gateway.http.post("/v1/images", json=payload, headers=headers)
    problem = problem_of(response, 422, "invalid_input")
    assert sorted(map(str, locs(problem))) == sorted(
        map(
            str,
            [["input", "num_outputs"], ["input", "output_quality"], ["routing", "strategy"]],
        )
    )


RAW_BODIES: list[Any] = [
    pytest.param(b"{not json", "application/json", id="not-json"),
    pytest.param(b"", "application/json", id="empty"),
    pytest.param(b"[1, 2]", "application/json", id="json-array"),
    pytest.param(b'"a red fox"', "application/json", id="json-string"),
    pytest.param(b"null", "application/json", id="json-null"),
    pytest.param(b"model=flux-2-dev", "application/x-www-form-urlencoded", id="form-encoded"),
    pytest.param(b"[" * 100_000, "application/json", id="nested-too-deep"),
    pytest.param(b"\xff\xfe{}", "application/json", id="not-utf8"),
]

NON_FINITE = [
    pytest.param(b'{"k": NaN}', id="nan"),
    pytest.param(b'{"k": [Infinity]}', id="infinity"),
    pytest.param(b'{"k": {"j": -Infinity}}', id="minus-infinity"),
]


@pytest.mark.parametrize("metadata", NON_FINITE)
async def test_metadata_with_nan_or_infinity_is_422(gateway: Gateway, metadata: bytes) -> None:
    """Python's JSON parser takes these literals; JSON (and PostgreSQL's JSONB) does not."""
    _, headers = await writer(gateway)
    content = b'{"model": "flux-2-dev", "input": {"prompt": "a fox"}, "metadata": %s}' % metadata
    response = await gateway.http.post(
        "/v1/images", content=content, headers={**headers, "Content-Type": "application/json"}
    )
    problem = problem_of(response, 422, "invalid_input")
    assert locs(problem) == [["metadata"]]


@pytest.mark.parametrize(("content", "content_type"), RAW_BODIES)
async def test_a_body_that_is_not_a_json_object_is_422(
    gateway: Gateway, content: bytes, content_type: str
) -> None:
    _, headers = await writer(gateway)
    response = await gateway.http.post(
        "/v1/images", content=content, headers={**headers, "Content-Type": content_type}
    )
    problem = problem_of(response, 422, "invalid_input")
    assert locs(problem) == [["body"]]


@pytest.mark.parametrize(
    "idempotency_key",
    [pytest.param("k" * 256, id="256-chars"), pytest.param("   ", id="blank")],
)
async def test_bad_idempotency_key_is_422(gateway: Gateway, idempotency_key: str) -> None:
    _, headers = await writer(gateway)
    response = await gateway.http.post(
        "/v1/images", json=body(), headers={**headers, "Idempotency-Key": idempotency_key}
    )
    problem = problem_of(response, 422, "invalid_input")
    assert locs(problem) == [["header", "Idempotency-Key"]]


async def test_idempotency_key_of_255_chars_is_accepted(gateway: Gateway) -> None:
    _, headers = await writer(gateway)
    response = await gateway.http.post(
        "/v1/images", json=body(), headers={**headers, "Idempotency-Key": "k" * 255}
    )
    assert response.status_code == 202, response.text


async def test_max_cost_below_every_price_is_no_route_naming_the_reasons(
    gateway: Gateway,
) -> None:
    _, headers = await writer(gateway)
    payload = top(routing={"max_cost_usd": "0.000001"})
    response = await gateway.http.post("/v1/images", json=payload, headers=headers)
    problem = problem_of(response, 422, "no_route")
    excluded = {entry["provider"]: entry["reason"] for entry in problem["excluded"]}
    assert "simulator" in excluded
    assert excluded["simulator"]


# --- accepted input, echoed normalised -------------------------------------------------------

DEFAULTS = {
    "input_images": [],
    "aspect_ratio": "1:1",
    "width": 1024,
    "height": 1024,
    "seed": None,
    "output_format": "webp",
    "output_quality": 80,
    "go_fast": True,
    "disable_safety_checker": False,
    "num_outputs": 1,
    "loras": [],
}

VALID_INPUTS: list[Any] = [
    pytest.param({}, DEFAULTS, id="defaults"),
    pytest.param({"prompt": "p" * 10_000}, {"prompt": "p" * 10_000}, id="prompt-10000-chars"),
    pytest.param(
        {"aspect_ratio": "custom", "width": 250, "height": 2049},
        {"aspect_ratio": "custom", "width": 256, "height": 2048},
        id="custom-250-2049-rounds-to-256-2048",
    ),
    pytest.param(
        {"width": 1000, "height": 700},
        {"aspect_ratio": "custom", "width": 992, "height": 704},
        id="width-height-imply-custom",
    ),
    pytest.param(
        {"width": 240, "height": 2063},
        {"aspect_ratio": "custom", "width": 256, "height": 2048},
        id="extremes-that-round-into-range",
    ),
    pytest.param(
        {"aspect_ratio": "16:9", "width": 5000},
        {"aspect_ratio": "16:9", "width": 1344, "height": 768},
        id="width-ignored-unless-custom",
    ),
    pytest.param({"seed": -1}, {"seed": None}, id="seed-minus-1-is-random"),
    pytest.param({"seed": 0}, {"seed": 0}, id="seed-0"),
    pytest.param({"seed": 2_147_483_647}, {"seed": 2_147_483_647}, id="seed-max"),
    pytest.param({"output_format": "jpeg"}, {"output_format": "jpg"}, id="jpeg-is-jpg"),
    pytest.param({"output_format": "png"}, {"output_format": "png"}, id="png"),
    pytest.param({"output_quality": 0}, {"output_quality": 0}, id="quality-0"),
    pytest.param({"output_quality": 100}, {"output_quality": 100}, id="quality-100"),
    pytest.param({"num_outputs": 4}, {"num_outputs": 4}, id="num-outputs-4"),
    pytest.param(
        {"go_fast": False, "disable_safety_checker": True},
        {"go_fast": False, "disable_safety_checker": True},
        id="flags",
    ),
    pytest.param(
        {"input_images": [URL] * 4, "loras": [LORA] * 3},
        {"input_images": [URL] * 4, "loras": [LORA] * 3},
        id="four-images-three-loras",
    ),
    pytest.param(
        {"input_images": [data_url(png(300, 200))], "aspect_ratio": "match_input_image"},
        {"aspect_ratio": "match_input_image", "width": 1248, "height": 832},
        id="match-input-image-3x2-data-url",
    ),
]


@pytest.mark.parametrize(("fields", "echoed"), VALID_INPUTS)
async def test_valid_input_is_accepted_and_echoed_normalised(
    gateway: Gateway, fields: Payload, echoed: Payload
) -> None:
    _, headers = await writer(gateway)
    payload = body(**fields)
    response = await gateway.http.post("/v1/images", json=payload, headers=headers)
    assert response.status_code == 202, response.text
    echoed_input = response.json()["input"]
    for name, value in echoed.items():
        assert echoed_input[name] == value, name
    assert echoed_input["prompt"] == payload["input"]["prompt"]


RATIOS = {
    "1:1": 1.0,
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "3:2": 3 / 2,
    "2:3": 2 / 3,
    "4:3": 4 / 3,
    "3:4": 3 / 4,
    "5:4": 5 / 4,
    "4:5": 4 / 5,
}


@pytest.mark.parametrize("aspect_ratio", list(RATIOS))
async def test_every_aspect_ratio_echoes_a_32_aligned_one_megapixel_size(
    gateway: Gateway, aspect_ratio: str
) -> None:
    _, headers = await writer(gateway)
    response = await gateway.http.post(
        "/v1/images", json=body(aspect_ratio=aspect_ratio), headers=headers
    )
    assert response.status_code == 202, response.text
    echoed = response.json()["input"]
    width, height = echoed["width"], echoed["height"]
    assert echoed["aspect_ratio"] == aspect_ratio
    assert width % 32 == 0 and height % 32 == 0
    assert 0.9 <= width * height / 1e6 <= 1.1
    assert abs((width / height) / RATIOS[aspect_ratio] - 1) <= 0.02


@pytest.mark.parametrize(
    "routing",
    [
        pytest.param({"max_cost_usd": "0.05"}, id="max-cost-string"),
        pytest.param({"max_cost_usd": 0.05}, id="max-cost-number"),
        pytest.param({"strategy": "fastest", "allow_fallbacks": False}, id="fastest"),
        pytest.param({"strategy": "ordered", "providers": ["simulator"]}, id="ordered"),
    ],
)
async def test_valid_routing_is_accepted(gateway: Gateway, routing: Payload) -> None:
    _, headers = await writer(gateway)
    response = await gateway.http.post("/v1/images", json=top(routing=routing), headers=headers)
    assert response.status_code == 202, response.text


async def test_metadata_up_to_4kb_is_kept(gateway: Gateway) -> None:
    _, headers = await writer(gateway)
    metadata = {"campaign": "winter", "blob": "x" * 4000, "nested": {"n": [1, 2.5, None]}}
    response = await gateway.http.post("/v1/images", json=top(metadata=metadata), headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == metadata


async def test_webhook_events_default_and_subset_are_accepted(gateway: Gateway) -> None:
    _, headers = await writer(gateway)
    for events in (["processing", "completed", "failed", "cancelled"], ["completed"], []):
        response = await gateway.http.post(
            "/v1/images", json=top(webhook_events=events), headers=headers
        )
        assert response.status_code == 202, response.text


# --- GET /v1/images: query rules ---------------------------------------------------------------

LIST_QUERIES: list[Any] = [
    pytest.param({"limit": 0}, ["query", "limit"], id="limit-0"),
    pytest.param({"limit": 101}, ["query", "limit"], id="limit-101"),
    pytest.param({"limit": "ten"}, ["query", "limit"], id="limit-text"),
    pytest.param({"status": "done"}, ["query", "status"], id="status-unknown"),
    pytest.param({"cursor": "not-a-cursor"}, ["query", "cursor"], id="cursor-garbage"),
    pytest.param(
        {"cursor": base64.urlsafe_b64encode(b"job_123").decode()},
        ["query", "cursor"],
        id="cursor-not-ours",
    ),
    pytest.param(
        {"created_after": "2026-01-01T00:00:00"}, ["query", "created_after"], id="after-naive"
    ),
    pytest.param(
        {"created_before": "2026-01-01T00:00:00"}, ["query", "created_before"], id="before-naive"
    ),
    pytest.param({"created_after": "yesterday"}, ["query", "created_after"], id="after-text"),
    pytest.param(
        {"created_before": "0.5"},
        ["query", "created_before"],
        id="before-unix-time",
    ),
    pytest.param({"created_after": "1767225600"}, ["query", "created_after"], id="after-unix"),
    pytest.param({"provider": "sim\x00"}, ["query", "provider"], id="provider-nul"),
    pytest.param({"model": "flux\x00"}, ["query", "model"], id="model-nul"),
    pytest.param({"cursor": "aW1n\x00"}, ["query", "cursor"], id="cursor-nul"),
]


@pytest.mark.parametrize(("query", "loc"), LIST_QUERIES)
async def test_list_query_rules(gateway: Gateway, query: Payload, loc: list[str]) -> None:
    key = await new_key(gateway.runtime, scopes=["images:read"])
    response = await gateway.http.get(
        "/v1/images", params=query, headers={"Authorization": f"Bearer {key}"}
    )
    problem = problem_of(response, 422, "invalid_input")
    assert locs(problem) == [loc]


# --- authentication and scopes -----------------------------------------------------------------

JOB_ID = "img_" + "0" * 26
Send = Callable[[httpx.AsyncClient, dict[str, str]], Any]
CALLS: list[Any] = [
    pytest.param(lambda http, h: http.post("/v1/images", json=body(), headers=h), id="POST"),
    pytest.param(lambda http, h: http.get("/v1/images", headers=h), id="GET-list"),
    pytest.param(lambda http, h: http.get(f"/v1/images/{JOB_ID}", headers=h), id="GET-one"),
    pytest.param(lambda http, h: http.delete(f"/v1/images/{JOB_ID}", headers=h), id="DELETE"),
]
BAD_CREDENTIALS: list[Any] = [
    pytest.param({}, id="no-key"),
    pytest.param({"Authorization": "Bearer ig_not-a-real-key"}, id="unknown-bearer"),
    pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-scheme"),
    pytest.param({"X-API-Key": "garbage"}, id="unknown-x-api-key"),
]


@pytest.mark.parametrize("send", CALLS)
@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
async def test_missing_or_malformed_key_is_401(
    gateway: Gateway, send: Send, headers: dict[str, str]
) -> None:
    response = await send(gateway.http, headers)
    problem_of(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_x_api_key_header_authenticates(gateway: Gateway) -> None:
    key = await new_key(gateway.runtime)
    response = await gateway.http.post("/v1/images", json=body(), headers={"X-API-Key": key})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("scopes", "send"),
    [
        pytest.param(["images:read"], CALLS[0].values[0], id="read-only-cannot-POST"),
        pytest.param(["images:read"], CALLS[3].values[0], id="read-only-cannot-DELETE"),
        pytest.param(["images:write"], CALLS[1].values[0], id="write-only-cannot-list"),
        pytest.param(["images:write"], CALLS[2].values[0], id="write-only-cannot-GET"),
        pytest.param(["usage:read"], CALLS[0].values[0], id="usage-only-cannot-POST"),
    ],
)
async def test_a_key_without_the_scope_is_403(
    gateway: Gateway, scopes: list[str], send: Send
) -> None:
    key = await new_key(gateway.runtime, scopes=scopes)
    response = await send(gateway.http, {"Authorization": f"Bearer {key}"})
    problem = problem_of(response, 403, "forbidden")
    assert "images:" in problem["detail"]


async def test_scope_checks_do_not_hide_a_real_job(gateway: Gateway) -> None:
    """The 403 comes from the scope, not the job: a reader still reads a job its team made."""
    team = f"team-scopes-{uuid.uuid4().hex[:8]}"
    author = await new_key(gateway.runtime, team=team)
    reader = await new_key(gateway.runtime, team=team, scopes=["images:read"])
    created = await gateway.http.post(
        "/v1/images", json=body(), headers={"Authorization": f"Bearer {author}"}
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    auth = {"Authorization": f"Bearer {reader}"}
    assert (await gateway.http.get(f"/v1/images/{job_id}", headers=auth)).status_code == 200
    refused = await gateway.http.delete(f"/v1/images/{job_id}", headers=auth)
    problem_of(refused, 403, "forbidden")
