"""Novita mapping, table-driven from payloads shaped like Novita's documented examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.providers.base import (
    ErrorCode,
    Lora,
    NotAccepted,
    ProtocolViolation,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamState,
    UpstreamStatus,
    WebhookRefused,
)
from app.providers.novita import mapping

PAYLOADS = Path(__file__).parent / "payloads" / "novita"
TASK_ID = "830d9c90-d53f-4c5a-8009-1a2b3c4d5e6f"
S3 = "https://faas-output-image.s3.ap-southeast-1.amazonaws.com/prod"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def make_request(fields: dict[str, Any]) -> UpstreamRequest:
    fields = dict(fields)
    fields["loras"] = tuple(Lora(**lora) for lora in fields.get("loras", ()))
    fields["input_images"] = tuple(fields.get("input_images", ()))
    fields.setdefault("output_format", "png")
    return UpstreamRequest(job_id="img_test", model="flux-2-dev", **fields)


@pytest.mark.parametrize("case", load("submit_requests.json"), ids=lambda case: case["name"])
def test_submit_body(case: dict[str, Any]) -> None:
    assert mapping.to_submit_body(make_request(case["request"])) == case["body"]


def test_lora_item_fields_come_from_one_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        mapping, "LORA_FIELDS", mapping.LoraFields(path="model_name", scale="strength")
    )
    request = make_request({"prompt": "p", "width": 512, "height": 512, "loras": [{"path": "x"}]})
    assert mapping.to_submit_body(request)["loras"] == [{"model_name": "x", "strength": 1.0}]


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_formats_novita_cannot_produce_are_not_accepted(fmt: str) -> None:
    request = make_request({"prompt": "p", "width": 512, "height": 512, "output_format": fmt})
    with pytest.raises(NotAccepted, match=fmt):
        mapping.to_submit_body(request)


def test_submit_answer() -> None:
    assert mapping.parse_submit_answer(load("submit_answer.json")) == TASK_ID


RESULTS: list[tuple[str, UpstreamState]] = [
    (
        "result_queued.json",
        UpstreamState(UpstreamStatus.QUEUED, "TASK_STATUS_QUEUED", seed=158881667),
    ),
    (
        "result_processing.json",
        UpstreamState(UpstreamStatus.RUNNING, "TASK_STATUS_PROCESSING", seed=158881667),
    ),
    (
        "result_succeed_ttl_number.json",
        UpstreamState(
            UpstreamStatus.SUCCEEDED,
            "TASK_STATUS_SUCCEED",
            outputs=(
                UpstreamOutput(
                    url=f"{S3}/830d9c90_0.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                    "&X-Amz-Expires=3600&X-Amz-Signature=b9ad40a5",
                    content_type="image/png",
                ),
            ),
            seed=158881667,
        ),
    ),
    (
        "result_succeed_ttl_string.json",
        UpstreamState(
            UpstreamStatus.SUCCEEDED,
            "TASK_STATUS_SUCCEED",
            outputs=(
                UpstreamOutput(
                    url=f"{S3}/5b1e7c22_0.jpeg?X-Amz-Expires=3600&X-Amz-Signature=0c1d2e3f",
                    content_type="image/jpeg",
                ),
            ),
            seed=0,
        ),
    ),
    (
        "result_failed.json",
        UpstreamState(
            UpstreamStatus.FAILED,
            "TASK_STATUS_FAILED",
            seed=158881667,
            error_code=ErrorCode.UPSTREAM_ERROR,
            error_message="internal error: inference worker exited unexpectedly",
        ),
    ),
    (
        "result_failed_nsfw.json",
        UpstreamState(
            UpstreamStatus.FAILED,
            "TASK_STATUS_FAILED",
            seed=158881667,
            error_code=ErrorCode.MODERATED,
            error_message="NSFW content detected in the generated image",
        ),
    ),
    (
        "result_failed_sensitive_prompt.json",
        UpstreamState(
            UpstreamStatus.FAILED,
            "TASK_STATUS_FAILED",
            error_code=ErrorCode.MODERATED,
            error_message="The prompt contains sensitive words",
        ),
    ),
    (
        "result_failed_invalid_input.json",
        UpstreamState(
            UpstreamStatus.FAILED,
            "TASK_STATUS_FAILED",
            error_code=ErrorCode.INVALID_INPUT,
            error_message="failed to download input image: 404 Not Found",
        ),
    ),
    (
        "result_failed_no_reason.json",
        UpstreamState(
            UpstreamStatus.FAILED,
            "TASK_STATUS_FAILED",
            error_code=ErrorCode.UPSTREAM_ERROR,
            error_message="Novita reported the task failed",
        ),
    ),
    ("result_bad_seed.json", UpstreamState(UpstreamStatus.QUEUED, "TASK_STATUS_QUEUED")),
]


@pytest.mark.parametrize(("payload", "expected"), RESULTS, ids=[name for name, _ in RESULTS])
def test_task_result_to_state(payload: str, expected: UpstreamState) -> None:
    assert mapping.to_state(mapping.parse_task_result(load(payload))) == expected


def test_every_documented_status_is_covered() -> None:
    seen = {mapping.parse_task_result(load(name)).task.status for name, _ in RESULTS}
    assert seen == set(mapping.STATUSES)


@pytest.mark.parametrize(
    ("payload", "ttl"),
    [("result_succeed_ttl_number.json", 3600.0), ("result_succeed_ttl_string.json", 3600.0)],
)
def test_url_ttl_is_read_as_number_or_string(payload: str, ttl: float) -> None:
    images = mapping.parse_task_result(load(payload)).images
    assert images is not None
    assert images[0].image_url_ttl == ttl


def test_nsfw_detection_result_is_parsed_but_does_not_change_the_state() -> None:
    result = mapping.parse_task_result(load("result_succeed_ttl_string.json"))
    assert result.images is not None
    detection = result.images[0].nsfw_detection_result
    assert detection is not None
    assert (detection.valid, detection.confidence) == (True, 2.44)
    assert mapping.to_state(result).status is UpstreamStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("result_unknown_status.json", "undocumented task status 'TASK_STATUS_PAUSED'"),
        ("result_succeed_without_images.json", "succeeded without images"),
        ("result_without_task.json", "task: Field required"),
    ],
)
def test_contract_breaks_are_protocol_violations(payload: str, reason: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        mapping.to_state(mapping.parse_task_result(load(payload)))
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("payload", "task_id"),
    [
        ("webhook_succeed.json", TASK_ID),
        ("webhook_failed.json", "5b1e7c22-0d4f-4b7e-9f1a-9c8d7e6f5a4b"),
    ],
)
def test_webhook_is_an_unverified_hint(payload: str, task_id: str) -> None:
    update = mapping.parse_webhook_body((PAYLOADS / payload).read_bytes())
    assert update.upstream_id == task_id
    assert update.verified is False
    assert update.state is None


@pytest.mark.parametrize(
    "body",
    [
        (PAYLOADS / "webhook_wrong_event.json").read_bytes(),
        (PAYLOADS / "webhook_without_task_id.json").read_bytes(),
        (PAYLOADS / "webhook_without_payload.json").read_bytes(),
        b"not json at all",
        b"[]",
        b"",
    ],
    ids=["wrong event", "no task id", "no payload", "not json", "array", "empty"],
)
def test_garbage_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookRefused):
        mapping.parse_webhook_body(body)
