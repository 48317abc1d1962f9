"""What one webhook try sends and what its answer means: pure functions, no I/O.

The message follows Standard Webhooks: body ``{"type": "image.<event>", "timestamp", "data"}``
(``data`` is the job object as ``GET /v1/images/{id}`` returns it, with image URLs signed at send
time), headers ``webhook-id`` (the same on every try), ``webhook-timestamp`` (this try) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` by the reference ``standardwebhooks``
library, keyed by the team's ``whsec_`` secret).

Answers: 2xx delivered; 410 stops every later delivery to that URL for the job; anything else,
3xx included (redirects are never followed), is a failed try, retried on the schedule in
``webhook_retry_schedule_s`` with jitter until it is used up.

Delivery is at least once (receivers deduplicate by ``webhook-id``) and events of one job are not
ordered against each other while one of them is being retried: ``timestamp`` (the transition's
time) and ``data.updated_at`` say which is newer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from app.jobs.views import render
from app.kit.egress import EgressResponse
from app.storage import UrlSigner


@dataclass(frozen=True, slots=True)
class Message:
    body: bytes
    headers: dict[str, str]


def build_message(
    *,
    webhook_id: str,
    event: str,
    payload: dict[str, Any],
    secret: str,
    signer: UrlSigner,
    base_url: str,
    now: datetime,
) -> Message:
    envelope = {
        "type": f"image.{event}",
        "timestamp": payload.get("updated_at"),
        "data": render(payload, signer, base_url),
    }
    body = orjson.dumps(envelope)
    signature = Webhook(secret).sign(webhook_id, now, body.decode())
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return Message(body, headers)


@dataclass(frozen=True, slots=True)
class TryResult:
    """One try's outcome, as recorded in the delivery's history."""

    status: int | None  # the receiver's HTTP status, when it answered
    error: str | None  # None: delivered
    gone: bool = False  # 410: stop delivering to this URL for this job

    @property
    def delivered(self) -> bool:
        return self.error is None


def judge(response: EgressResponse) -> TryResult:
    status = response.status
    if 200 <= status < 300:
        return TryResult(status, None)
    if status == 410:
        return TryResult(status, "the receiver answered 410 Gone; delivery stopped", gone=True)
    if response.is_redirect or 300 <= status < 400:
        return TryResult(status, f"the receiver answered {status}; redirects are not followed")
    return TryResult(status, f"the receiver answered {status}")


def retry_delay(
    failed_tries: int, schedule: list[float], jitter: float, rng: random.Random
) -> float | None:
    """Seconds until the next try after ``failed_tries`` failures; None once the schedule ends."""
    if failed_tries > len(schedule):
        return None
    base = schedule[failed_tries - 1]
    return max(0.0, base * (1.0 + rng.uniform(-jitter, jitter)))
