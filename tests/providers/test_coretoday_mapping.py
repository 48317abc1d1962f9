"""core.today mapping, table-driven from payloads in both documented answer shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.providers.base import (
    ErrorCode,
    ProtocolViolation,
    UpstreamRequest,
    UpstreamStatus,
    WebhookRefused,
)
from app.providers.coretoday import CoreTodayProvider, create
from app.providers.coretoday.mapping import STATUSES, build_create_body, parse_job, to_state
from tests.emulators.coretoday import CoreTodayEmulator
from tests.emulators.replicate import validate_input

PAYLOADS = Path(__file__).parent / "payloads" / "coretoday"
REQUESTS: list[dict[str, Any]] = json.loads((PAYLOADS / "requests.json").read_text())
RESPONSES: list[dict[str, Any]] = json.loads((PAYLOADS / "responses.json").read_text())


def make_request(fields: dict[str, Any]) -> UpstreamRequest:
    return UpstreamRequest(**(fields | {"input_images": tuple(fields.get("input_images", ()))}))


@pytest.mark.parametrize("case", REQUESTS, ids=[c["name"] for c in REQUESTS])
def test_request_mapping(case: dict[str, Any]) -> None:
    body = build_create_body(make_request(case["request"]))

    assert body == case["body"]
    assert validate_input(body["input"]) == []


def test_request_cases_cover_every_documented_input_field() -> None:
    documented = {
        "prompt", "input_images", "aspect_ratio", "width", "height", "seed", "go_fast",
        "output_format", "output_quality", "disable_safety_checker",
    }  # fmt: skip
    sent = {key for case in REQUESTS for key in case["body"]["input"]}

    assert sent == documented
    assert {c["body"]["input"]["output_format"] for c in REQUESTS} == {"webp", "jpg", "png"}


def test_the_seeds_example_request_is_what_we_send() -> None:
    example = json.loads((PAYLOADS / "seed_example_request.json").read_text())
    ours = next(c for c in REQUESTS if c["name"] == "seed_example")["body"]

    assert ours["model"] == example["model"]
    assert ours["input"] == example["input"] | {"disable_safety_checker": False}


@pytest.mark.parametrize("case", RESPONSES, ids=[c["payload"] for c in RESPONSES])
def test_response_mapping(case: dict[str, Any]) -> None:
    raw = json.loads((PAYLOADS / case["payload"]).read_text())

    if "violation" in case:
        with pytest.raises(ProtocolViolation, match=case["violation"]):
            to_state(parse_job(raw, "coretoday get"))
        return
    job = parse_job(raw, "coretoday get")
    state = to_state(job)

    assert job.upstream_id == case["id"]
    assert state.status == UpstreamStatus(case["status"])
    assert state.raw_status == case["raw_status"]
    assert [[o.url, o.content_type] for o in state.outputs] == case["outputs"]
    assert state.error_code == (ErrorCode(case["error_code"]) if case["error_code"] else None)


def test_response_cases_cover_every_status_of_both_shapes() -> None:
    seen = {json.loads((PAYLOADS / c["payload"]).read_text())["status"] for c in RESPONSES}

    assert set(STATUSES) <= seen


def provider() -> CoreTodayProvider:
    settings = CoreTodayEmulator().provider_settings("http://127.0.0.1:9")
    return create("coretoday", settings, httpx.AsyncClient())


@pytest.mark.parametrize(
    ("payload", "upstream_id"),
    [
        ("seed_completed.json", "abc123"),
        ("replicate_succeeded.json", "pred_8h2k4m6n8p0r2t4v6x8z0b2d4f"),
    ],
)
def test_webhooks_are_unverified_hints(payload: str, upstream_id: str) -> None:
    update = provider().parse_webhook({}, (PAYLOADS / payload).read_bytes())

    assert update.upstream_id == upstream_id
    assert not update.verified
    assert update.state is None  # never trusted: the gateway polls once


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"status": "completed"}'])
def test_webhook_garbage_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookRefused):
        provider().parse_webhook({}, body)
