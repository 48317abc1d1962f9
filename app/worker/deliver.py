"""Deliver: send one claimed client webhook and record what happened.

Claim (a try is counted and the row leased) → read the delivery and the team's secret → sign and
POST through the egress client (pinned to checked addresses, no redirects, capped, deadline) →
record the outcome under the same claim. A worker that dies mid-try leaves the lease to expire and
the next claim tries again with the same ``webhook-id``: delivery is at least once, and receivers
deduplicate by that id.
"""

from __future__ import annotations

import random
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.egress import EgressError, EgressRefused
from app.kit.timeutil import rfc3339, utcnow
from app.runtime import Runtime
from app.webhooks.delivery import TryResult, build_message, judge, retry_delay
from app.webhooks.repository import (
    DELIVERED,
    FAILED,
    GONE,
    DeliveryClaim,
    DeliveryRepository,
)
from app.webhooks.secrets import team_webhook_secret
from app.worker.context import log

HISTORY_KEPT = 20
LEASE_MARGIN_S = 30.0  # a claim outlives the longest try by this much
_rng = random.SystemRandom()


def lease_s(runtime: Runtime) -> float:
    return runtime.settings.webhook_timeout_s + LEASE_MARGIN_S


async def claim_deliveries(
    runtime: Runtime, session: AsyncSession, limit: int
) -> list[DeliveryClaim]:
    """Claim up to ``limit`` due deliveries in the caller's transaction (it commits)."""
    return await DeliveryRepository(session).claim_due(limit=limit, lease_s=lease_s(runtime))


async def deliver(runtime: Runtime, claim: DeliveryClaim) -> None:
    async with runtime.sessions() as session:
        repo = DeliveryRepository(session)
        delivery = await repo.get(claim.delivery_id)
        if delivery is None or delivery.attempts != claim.attempt or delivery.state != "pending":
            return
        secret = await team_webhook_secret(session, delivery.team_id)
        await session.commit()
        message = build_message(
            webhook_id=delivery.webhook_id,
            event=delivery.event,
            payload=delivery.payload,
            secret=secret,
            signer=runtime.signer,
            base_url=runtime.settings.public_base_url or "",
            now=utcnow(),
        )
        url = delivery.url
    started = time.monotonic()
    result = await _send(runtime, url, message.body, message.headers)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    await _record(runtime, claim, result, elapsed_ms)


async def _send(runtime: Runtime, url: str, body: bytes, headers: dict[str, str]) -> TryResult:
    try:
        response = await runtime.egress.webhooks.post(url, body, headers)
    except EgressRefused as exc:
        return TryResult(None, f"refused by the egress policy: {exc.reason}")
    except EgressError as exc:
        return TryResult(None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug must not leave the delivery leased until the lease ends
        log.exception("webhook try raised unexpectedly")
        return TryResult(None, f"unexpected {type(exc).__name__}")
    return judge(response)


async def _record(runtime: Runtime, claim: DeliveryClaim, result: TryResult, ms: int) -> None:
    settings = runtime.settings
    async with runtime.sessions() as session:
        repo = DeliveryRepository(session)
        delivery = await repo.claimed(claim)
        if delivery is None:
            return  # re-claimed after our lease ran out: the newer try owns the row
        entry: dict[str, Any] = {
            "attempt": claim.attempt,
            "at": rfc3339(utcnow()),
            "status": result.status,
            "error": result.error,
            "ms": ms,
        }
        delivery.history = [*(delivery.history or []), entry][-HISTORY_KEPT:]
        delivery.last_status = result.status
        delivery.last_error = result.error
        delivery.updated_at = utcnow()
        if result.delivered:
            delivery.state, delivery.next_attempt_at = DELIVERED, None
            delivery.delivered_at = utcnow()
        elif result.gone:
            delivery.state, delivery.next_attempt_at = GONE, None
            await repo.stop_job(delivery.job_id, delivery.url, result.error or "gone")
        else:
            delay = retry_delay(
                claim.attempt,
                settings.webhook_retry_schedule_s,
                settings.webhook_retry_jitter,
                _rng,
            )
            if delay is None:
                delivery.state, delivery.next_attempt_at = FAILED, None
            else:
                repo.retry_in(delivery, delay)
        await session.commit()
        log.info(
            "webhook try",
            job_id=delivery.job_id,
            webhook_id=delivery.webhook_id,
            attempt=claim.attempt,
            status=result.status,
            error=result.error,
            state=delivery.state,
        )
