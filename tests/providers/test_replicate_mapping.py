"""Replicate mapping, table-driven from payloads shaped like Replicate's documented examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.providers.base import (
    ErrorCode,
    NotAccepted,
    ProtocolViolation,
    UpstreamRequest,
    UpstreamStatus,
)
from app.providers.replicate.mapping import (
    STATUSES,
    build_create_body,
    classify_failure,
    parse_prediction,
    resolve_target,
    to_state,
)
from tests.emulators.replicate import validate_input

PAYLOADS = Path(__file__).parent / "payloads" / "replicate"
REQUESTS: list[dict[str, Any]] = json.loads((PAYLOADS / "requests.json").read_text())
RESPONSES: list[dict[str, Any]] = json.loads((PAYLOADS / "responses.json").read_text())


def make_request(fields: dict[str, Any]) -> UpstreamRequest:
    fields = dict(fields)
    fields["input_images"] = tuple(fields.get("input_images", ()))
    return UpstreamRequest(**fields)


@pytest.mark.parametrize("case", REQUESTS, ids=[c["name"] for c in REQUESTS])
def test_request_mapping(case: dict[str, Any]) -> None:
    request = make_request(case["request"])
    target = resolve_target(request.model, case.get("settings_model"))

    assert target.path == case["path"]
    assert build_create_body(request, target) == case["body"]


@pytest.mark.parametrize("case", REQUESTS, ids=[c["name"] for c in REQUESTS])
def test_every_mapped_input_passes_the_emulator_schema(case: dict[str, Any]) -> None:
    body = build_create_body(
        make_request(case["request"]), resolve_target(case["request"]["model"])
    )

    assert validate_input(body["input"]) == []


def test_request_cases_cover_every_documented_input_field() -> None:
    documented = {
        "prompt", "input_images", "aspect_ratio", "width", "height", "seed", "go_fast",
        "output_format", "output_quality", "disable_safety_checker",
    }  # fmt: skip
    sent = {key for case in REQUESTS for key in case["body"]["input"]}
    formats = {case["body"]["input"]["output_format"] for case in REQUESTS}

    assert sent == documented
    assert formats == {"webp", "jpg", "png"}


@pytest.mark.parametrize("ref", ["flux-2-dev", "acme/flux:v1", "a/b/c", "acme/flux:" + "0" * 63])
def test_unusable_model_refs_are_not_accepted(ref: str) -> None:
    with pytest.raises(NotAccepted, match="replicate"):
        resolve_target(ref)


@pytest.mark.parametrize("case", RESPONSES, ids=[c["payload"] for c in RESPONSES])
def test_response_mapping(case: dict[str, Any]) -> None:
    raw = json.loads((PAYLOADS / case["payload"]).read_text())

    if "violation" in case:
        with pytest.raises(ProtocolViolation, match=case["violation"]):
            to_state(parse_prediction(raw, "replicate get"))
        return
    state = to_state(parse_prediction(raw, "replicate get"))

    assert state.status == UpstreamStatus(case["status"])
    assert state.raw_status == case["raw_status"]
    assert [(o.url, o.content_type) for o in state.outputs] == [
        (o["url"], o["content_type"]) for o in case["outputs"]
    ]
    assert state.seed == case["seed"]
    assert state.error_code == (ErrorCode(case["error_code"]) if case["error_code"] else None)
    if "error_message" in case:
        assert state.error_message == case["error_message"]


def test_response_cases_cover_every_documented_status() -> None:
    raw_statuses = {json.loads((PAYLOADS / c["payload"]).read_text())["status"] for c in RESPONSES}

    assert set(STATUSES) <= raw_statuses


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("NSFW content detected", ErrorCode.MODERATED),
        ("flagged as sensitive (E005)", ErrorCode.MODERATED),
        ("Image rejected by the safety checker", ErrorCode.MODERATED),
        ("Invalid input: prompt too long", ErrorCode.INVALID_INPUT),
        ("Could not load the input image", ErrorCode.INVALID_INPUT),
        ("CUDA out of memory", ErrorCode.UPSTREAM_ERROR),
        (None, ErrorCode.UPSTREAM_ERROR),
    ],
)
def test_failure_classification(message: str | None, code: ErrorCode) -> None:
    assert classify_failure(message) is code
