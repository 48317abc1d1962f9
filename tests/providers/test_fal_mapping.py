"""fal mapping, table-driven from payloads shaped like fal's documented examples.

Every input field of providers.md's fal section (request side), every status value including a
COMPLETED that failed (status side), every output shape (result side), the submit answer, the
cancel answer and webhook bodies.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.providers.base import (
    Capabilities,
    ErrorCode,
    Lora,
    NotAccepted,
    OutcomeUnknown,
    ProtocolViolation,
    UpstreamOutput,
    UpstreamRequest,
    UpstreamStatus,
    WebhookRefused,
)
from app.providers.fal import mapping

PAYLOADS = Path(__file__).parent / "payloads" / "fal"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return data


def cases(name: str, key: str = "cases") -> list[Any]:
    return [pytest.param(case, id=case.get("name", str(case))) for case in load(name)[key]]


def upstream_request(fields: dict[str, Any]) -> UpstreamRequest:
    values = dict(fields)
    values["input_images"] = tuple(values.get("input_images", ()))
    values["loras"] = tuple(Lora(**lora) for lora in values.get("loras", ()))
    return UpstreamRequest(job_id="job_1", model="fal-ai/flux-2", **values)


# --- request side ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("requests.json"))
def test_request_maps_to_endpoint_and_body(case: dict[str, Any]) -> None:
    request = upstream_request(case["request"])
    model = case.get("settings_model") or request.model

    assert mapping.endpoint_id(request, model) == case["endpoint"]
    assert mapping.build_input(request) == case["body"]


def test_request_cases_cover_every_documented_input_field() -> None:
    sent: set[str] = set()
    values: dict[str, set[str]] = {"acceleration": set(), "output_format": set()}
    for case in load("requests.json")["cases"]:
        sent |= case["body"].keys()
        for key in values:
            values[key].add(case["body"][key])
    documented = {
        "prompt",
        "image_size",
        "seed",
        "num_images",
        "acceleration",
        "enable_safety_checker",
        "output_format",
        "sync_mode",
        "image_urls",
        "loras",
    }
    assert sent == documented  # num_inference_steps / guidance_scale: fal's defaults, never sent
    assert values == {"acceleration": {"regular", "none"}, "output_format": {"jpeg", "png", "webp"}}


def test_images_and_loras_together_have_no_endpoint() -> None:
    request = upstream_request(
        {
            "prompt": "p",
            "width": 512,
            "height": 512,
            "input_images": ["https://files.example.test/a.png"],
            "loras": [{"path": "owner/repo", "scale": 1.0}],
        }
    )
    with pytest.raises(NotAccepted, match="input images and loras"):
        mapping.endpoint_id(request, "fal-ai/flux-2")


@pytest.mark.parametrize(
    ("model", "app"),
    [
        ("fal-ai/flux-2", "fal-ai/flux-2"),
        ("fal-ai/flux-2/edit", "fal-ai/flux-2"),
        ("fal-ai/flux-2/lora", "fal-ai/flux-2"),
        ("owner/app/deep/path", "owner/app"),
    ],
)
def test_app_id_drops_the_endpoint_sub_path(model: str, app: str) -> None:
    assert mapping.app_id(model) == app


def test_capabilities_match_the_fal_section() -> None:
    expected = Capabilities(
        max_input_images=4,
        max_loras=3,
        min_side=512,
        max_side=2048,
        formats=frozenset({"webp", "jpg", "png"}),
        max_outputs=4,
        cancel=True,
        webhooks=True,
    )
    actual = mapping.CAPABILITIES
    assert actual == expected


# --- submit answer --------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("submit.json"))
def test_submit_answer_keeps_the_returned_urls(case: dict[str, Any]) -> None:
    answer = mapping.parse_submit(case["body"])
    result = mapping.submitted(answer, "https://queue.fal.run")

    assert result.upstream_id == case["request_id"]
    assert dict(result.handle) == case["handle"]
    assert result.state is None


@pytest.mark.parametrize("case", cases("submit.json", "violations"))
def test_submit_answer_without_request_id_is_an_unknown_outcome(case: dict[str, Any]) -> None:
    with pytest.raises(OutcomeUnknown, match=case["reason"]):
        mapping.parse_submit(case["body"])


# --- status side ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("statuses.json"))
def test_status_maps_to_state(case: dict[str, Any]) -> None:
    state = mapping.state_from_status(mapping.parse_status(case["body"]))
    expected = case["expected"]

    if expected is None:
        assert state is None  # completed cleanly: the result decides
        return
    assert state is not None
    assert state.status == UpstreamStatus(expected["status"])
    assert state.raw_status == expected["raw_status"]
    code = expected.get("error_code")
    assert state.error_code == (ErrorCode(code) if code else None)
    assert state.outputs == ()
    if state.status in (UpstreamStatus.FAILED, UpstreamStatus.CANCELED):
        assert state.error_message  # the upstream's reason travels with the state


def test_status_cases_cover_every_status_value() -> None:
    seen = {case["body"]["status"] for case in load("statuses.json")["cases"]}
    outcomes = {
        (case["expected"] or {"status": "result decides"})["status"]
        for case in load("statuses.json")["cases"]
    }
    assert seen == {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    assert outcomes == {"queued", "running", "failed", "canceled", "result decides"}


@pytest.mark.parametrize("case", cases("statuses.json", "violations"))
def test_undocumented_or_broken_status_is_a_protocol_violation(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolViolation, match=case["reason"]):
        mapping.state_from_status(mapping.parse_status(case["body"]))


# --- result side ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("results.json"))
def test_result_maps_to_state(case: dict[str, Any]) -> None:
    result = mapping.parse_result(case["body"])
    state = mapping.state_from_result(result, safety_checker_on=case["safety_checker_on"])
    expected = case["expected"]

    assert state.status == UpstreamStatus(expected["status"])
    assert state.raw_status == "COMPLETED"
    assert state.seed == expected["seed"]
    assert state.outputs == tuple(UpstreamOutput(**output) for output in expected["outputs"])
    code = expected.get("error_code")
    assert state.error_code == (ErrorCode(code) if code else None)


@pytest.mark.parametrize("case", cases("results.json", "violations"))
def test_broken_result_is_a_protocol_violation(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolViolation, match=case["reason"]):
        mapping.state_from_result(mapping.parse_result(case["body"]), safety_checker_on=True)


# --- cancel and webhooks --------------------------------------------------------------------


@pytest.mark.parametrize("body", load("cancel.json")["accepted"], ids=str)
def test_cancel_answers_that_end_the_call(body: dict[str, Any]) -> None:
    assert mapping.parse_cancel(body).status == body["status"]


@pytest.mark.parametrize("body", load("cancel.json")["violations"], ids=str)
def test_cancel_answer_out_of_contract(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolViolation, match="fal cancel"):
        mapping.parse_cancel(body)


@pytest.mark.parametrize("case", cases("webhooks.json", "hints"))
def test_webhook_is_an_unverified_hint(case: dict[str, Any]) -> None:
    update = mapping.webhook_update(json.dumps(case["body"]).encode())

    assert update.upstream_id == case["upstream_id"]
    assert update.verified is False
    assert update.state is None  # never trusted: the gateway confirms with one poll
    assert update.event_id == case["event_id"]


@pytest.mark.parametrize("case", cases("webhooks.json", "refused"))
def test_garbage_webhook_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(WebhookRefused):
        mapping.webhook_update(case["raw"].encode())


@pytest.mark.parametrize(
    ("error", "error_type", "code"),
    [
        (None, "runner_scheduling_failure", ErrorCode.UPSTREAM_ERROR),
        ("boom", None, ErrorCode.UPSTREAM_ERROR),
        (None, "generation_timeout", ErrorCode.UPSTREAM_TIMEOUT),
        (None, "unsupported_image_format", ErrorCode.INVALID_INPUT),
        ("Content Policy violation", "internal_error", ErrorCode.MODERATED),
    ],
)
def test_failure_codes(error: str | None, error_type: str | None, code: ErrorCode) -> None:
    assert mapping.failure_code(error, error_type) is code


def test_seed_none_is_omitted_but_other_fields_stay() -> None:
    base = upstream_request({"prompt": "p", "width": 512, "height": 512, "seed": 3})
    assert mapping.build_input(base)["seed"] == 3
    assert "seed" not in mapping.build_input(replace(base, seed=None))
