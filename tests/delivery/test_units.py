"""The pure parts of delivery: retry schedule, answer classification, expiry rewriting."""

from __future__ import annotations

import random

from multidict import CIMultiDict, CIMultiDictProxy

from app.config import Settings
from app.kit.egress import EgressResponse
from app.webhooks.delivery import judge, retry_delay
from app.worker.retention import expired_result


def answer(status: int) -> EgressResponse:
    return EgressResponse(status, CIMultiDictProxy(CIMultiDict()), b"", None, "127.0.0.1")


def test_the_default_schedule_retries_for_about_a_day_with_bounded_jitter() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    schedule, jitter = settings.webhook_retry_schedule_s, settings.webhook_retry_jitter
    rng = random.Random(7)
    delays = [retry_delay(n, schedule, jitter, rng) for n in range(1, len(schedule) + 2)]
    assert delays[-1] is None  # the schedule's end: the delivery fails for good
    spent = [d for d in delays if d is not None]
    assert 20 * 3600 <= sum(spent) <= 36 * 3600
    for delay, base in zip(spent, schedule, strict=True):
        assert base * (1 - jitter) <= delay <= base * (1 + jitter)
    assert retry_delay(1, [10.0], 0.0, rng) == 10.0


def test_answers_are_judged_as_the_contract_says() -> None:
    assert judge(answer(200)).delivered and judge(answer(204)).delivered
    for status in (301, 302, 303, 307, 308):
        result = judge(answer(status))
        assert not result.delivered and not result.gone
        assert "redirects are not followed" in (result.error or "")
    gone = judge(answer(410))
    assert gone.gone and not gone.delivered
    for status in (400, 404, 429, 500, 503):
        result = judge(answer(status))
        assert not result.delivered and not result.gone and result.status == status


def test_expiry_rewrites_the_result_once() -> None:
    result = {
        "images": [{"storage_key": "img_1/0.png", "bytes": 3, "width": 1, "height": 1}],
        "seed": 5,
    }
    once = expired_result(result, "2026-01-01T00:00:00.000Z")
    assert once == {
        "images": [{"bytes": 3, "width": 1, "height": 1, "expired": True}],
        "seed": 5,
        "expired_at": "2026-01-01T00:00:00.000Z",
    }
    assert expired_result(once, "2027-01-01T00:00:00.000Z") == once
    assert expired_result(None, "x") is None
