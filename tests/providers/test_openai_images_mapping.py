"""OpenAI-style images mapping for both dialects, table-driven from documented-shape payloads."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from app.config import ConfigError
from app.providers.base import (
    ErrorCode,
    Lora,
    ProtocolViolation,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamStatus,
)
from app.providers.openai_images import mapping
from app.providers.openai_images.dialects import DEEPINFRA, TOGETHER, Dialect, detect

PAYLOADS = Path(__file__).parent / "payloads" / "openai_images"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def make_request(fields: dict[str, Any]) -> UpstreamRequest:
    fields = dict(fields)
    fields["loras"] = tuple(Lora(**lora) for lora in fields.get("loras", ()))
    fields["input_images"] = tuple(fields.get("input_images", ()))
    return UpstreamRequest(job_id="img_test", model="flux-2-dev", **fields)


@pytest.mark.parametrize(
    ("dialect", "case"),
    [(TOGETHER, case) for case in load("together_requests.json")]
    + [(DEEPINFRA, case) for case in load("deepinfra_requests.json")],
    ids=lambda value: value["name"] if isinstance(value, dict) else value.name,
)
def test_request_body(dialect: Dialect, case: dict[str, Any]) -> None:
    body = dialect.build_body(make_request(case["request"]), dialect.default_model)
    assert body == case["body"]


JPG = make_request({"prompt": "p", "width": 640, "height": 384, "output_format": "jpg"})
PNG = make_request({"prompt": "p", "width": 640, "height": 384, "output_format": "png"})


def test_together_url_answer() -> None:
    state = mapping.to_state(mapping.parse_answer(load("together_answer_url.json")), PNG, 7)
    assert (state.status, state.raw_status, state.seed) == (UpstreamStatus.SUCCEEDED, "ok", 7)
    assert state.outputs == (
        UpstreamOutput("https://api.together.ai/shrt/DkPN1bH8uTqX1bc2", "image/png", 640, 384),
    )


def test_together_answer_id_and_model_are_read() -> None:
    answer = mapping.parse_answer(load("together_answer_url.json"))
    assert (answer.id, answer.model) == (
        "o6bJ8yA-2kFHot-9a0b5b7e3c1d2e3f",
        "black-forest-labs/FLUX.2-dev",
    )


def test_outputs_follow_the_upstream_index() -> None:
    answer = mapping.parse_answer(load("together_answer_urls_out_of_order.json"))
    urls = [output.url for output in mapping.to_state(answer, JPG, None).outputs]
    assert urls == ["https://api.together.ai/shrt/first", "https://api.together.ai/shrt/second"]


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        ("together_answer_b64.json", "image/png"),
        ("deepinfra_answer.json", "image/jpeg"),
        ("deepinfra_answer_webp.json", "image/webp"),
    ],
)
def test_base64_answers_become_data_urls_of_the_sniffed_type(
    payload: str, content_type: str
) -> None:
    raw = load(payload)["data"][0]["b64_json"]
    state = mapping.to_state(mapping.parse_answer(load(payload)), JPG, None)
    (output,) = state.outputs
    assert output.url == f"data:{content_type};base64,{raw}"
    assert output.content_type == content_type
    assert base64.b64decode(output.url.partition(",")[2]) == base64.b64decode(raw)


def test_deepinfra_answer_has_no_id() -> None:
    answer = mapping.parse_answer(load("deepinfra_answer.json"))
    assert (answer.id, answer.created) == (None, 1764000000)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("answer_empty_data.json", "data"),
        ("answer_without_data.json", "data: Field required"),
        ("answer_item_without_image.json", "exactly one of url and b64_json"),
        ("answer_item_with_both.json", "exactly one of url and b64_json"),
    ],
)
def test_answers_that_break_the_shape_are_protocol_violations(payload: str, reason: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        mapping.parse_answer(load(payload))
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("answer_bad_base64.json", "not valid base64"),
        ("answer_not_an_image.json", "not a png, jpeg or webp"),
    ],
)
def test_unreadable_images_are_protocol_violations(payload: str, reason: str) -> None:
    answer = mapping.parse_answer(load(payload))
    with pytest.raises(ProtocolViolation, match=reason):
        mapping.to_state(answer, JPG, None)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (
            "HTTP 422 {'error': {'message': 'flagged by the NSFW safety checker'}}",
            ErrorCode.MODERATED,
        ),
        ("HTTP 400 {'error': {'code': 'content_policy_violation'}}", ErrorCode.MODERATED),
        ("HTTP 400 Your request was rejected by moderation", ErrorCode.MODERATED),
        ("HTTP 400 disable_safety_checker must be a boolean", None),
        ("HTTP 400 width must be between 256 and 1440", None),
    ],
)
def test_refusals_naming_the_safety_checker_are_moderation(
    message: str, code: ErrorCode | None
) -> None:
    assert mapping.refusal_code(message) is code


@pytest.mark.parametrize(
    ("name", "base_url", "model", "expected"),
    [
        ("together", None, None, TOGETHER),
        ("together-eu", "https://proxy.internal/v1", None, TOGETHER),
        ("deepinfra", None, None, DEEPINFRA),
        ("images-a", "https://api.together.xyz/v1", None, TOGETHER),
        ("images-b", "https://api.deepinfra.com/v1/openai", None, DEEPINFRA),
        ("images-c", "https://proxy.internal/v1", "black-forest-labs/FLUX.2-dev", TOGETHER),
        ("images-d", "https://proxy.internal/v1", "black-forest-labs/FLUX-2-dev", DEEPINFRA),
    ],
)
def test_dialect_detection(
    name: str, base_url: str | None, model: str | None, expected: Dialect
) -> None:
    assert detect(name, base_url, model) is expected


def test_an_unrecognisable_instance_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="images-x"):
        detect("images-x", "https://proxy.internal/v1", "some/model")
