"""Dispatch: submit a queued job to its next route candidate, paying at most once.

Transaction 1 records the attempt in ``submitting`` before anything is sent. If the process dies
after sending, the reaper finds the attempt and never resubmits. Transaction 2 records what the
upstream said.

The candidate is the next one in the job's plan whose circuit breaker admits a submit (see
``routing.selection``); every submit's outcome is reported to the breaker. When every remaining
candidate's breaker is open the job waits for the soonest to half-open, within its deadline.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from app.jobs import states
from app.jobs.service import attempt_ref
from app.kit.timeutil import utcnow
from app.models import Attempt
from app.providers.base import (
    ErrorCode,
    NotAccepted,
    OutcomeUnknown,
    Provider,
    Rejected,
    Submitted,
)
from app.routing.breaker import Ticket
from app.routing.selection import AllOpen, choose
from app.runtime import Runtime
from app.worker import context
from app.worker.context import Claimed, log
from app.worker.leases import Claim, release
from app.worker.track import apply_state

NOT_ACCEPTED_RETRIES = 4
RECORD_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
MIN_BREAKER_WAIT_S = 0.05


async def dispatch(runtime: Runtime, claim: Claim) -> None:
    prepared = await _prepare(runtime, claim)
    if prepared is None:
        return
    provider, attempt_id, ref_request, ticket = prepared
    try:
        submitted: Submitted | Exception = await provider.submit(ref_request)
    except (NotAccepted, OutcomeUnknown, Rejected) as exc:
        submitted = exc
    except Exception as exc:  # a bug or an unclassified failure: treat as unknown, never resubmit
        log.exception("submit raised unexpectedly", job_id=claim.job_id, provider=provider.name)
        submitted = OutcomeUnknown(f"unexpected {type(exc).__name__}: {exc}")
    await runtime.health.report_submit(provider.name, ticket, submitted)
    # The upstream's answer is known only here: keep trying to record it through a database
    # blip, since giving up would turn a known outcome into `submit_outcome_unknown`.
    for delay in RECORD_RETRY_DELAYS:
        try:
            await _record(runtime, claim, provider, attempt_id, submitted)
            return
        except (DBAPIError, SQLAlchemyTimeout, OSError) as exc:
            log.warning("recording a submit outcome failed; retrying", error=type(exc).__name__)
            await asyncio.sleep(delay)
    await _record(runtime, claim, provider, attempt_id, submitted)


async def _prepare(runtime: Runtime, claim: Claim) -> tuple[Provider, int, Any, Ticket] | None:
    async with runtime.sessions() as session:
        claimed = await context.load(session, claim)
        if claimed is None:
            return None
        job = claimed.job
        if job.deadline_at is not None and job.deadline_at <= utcnow():
            await context.fail_job(claimed, claim, ErrorCode.DEADLINE_EXCEEDED, "deadline passed")
            await session.commit()
            await context.after_commit(runtime, job.id)
            return None
        choice = None
        if context.next_candidate(job) is not None:
            plan, position = job.route_plan, job.attempt_count
            choice = await choose(runtime.health, runtime.providers, plan, position)
        if isinstance(choice, AllOpen):
            await _wait_for_breakers(runtime, claimed, claim, choice.retry_in)
            await session.commit()
            await context.after_commit(runtime, job.id)
            return None
        if choice is None:
            reason = "every route candidate was tried or is unavailable"
            await context.fail_job(claimed, claim, ErrorCode.NO_PROVIDER_AVAILABLE, reason)
            await session.commit()
            await context.after_commit(runtime, job.id)
            return None
        candidate, provider, ticket = choice.candidate, choice.provider, choice.ticket
        now = utcnow()
        attempt = Attempt(
            job_id=job.id,
            provider=provider.name,
            upstream_model=candidate["upstream_model"],
            state="submitting",
            submitted_at=now,
            poll_count=0,
        )
        session.add(attempt)
        moved = await claimed.repo.transition(
            job.id,
            claimed.state,
            states.SUBMITTING,
            epoch=claim.epoch,
            values={
                "provider": provider.name,
                "attempt_count": job.attempt_count + 1,
                "started_at": job.started_at or now,
                "estimated_cost_micros": candidate.get("estimate_micros"),
                **({"route_plan": choice.plan} if choice.plan != job.route_plan else {}),
            },
            detail={"provider": provider.name, **({"probe": True} if ticket.probe else {})},
        )
        if not moved:
            await runtime.health.give_back(provider.name, ticket)
            return None
        await session.commit()
    await context.after_commit(runtime, job.id)
    ref = attempt_ref(job, attempt)
    request = ref.request
    if runtime.settings.public_base_url:
        hook = f"{runtime.settings.public_base_url}/v1/providers/{provider.name}/webhook"
        request = _with_webhook(request, f"{hook}?job_id={job.id}")
    return provider, attempt.id, request, ticket


async def _wait_for_breakers(
    runtime: Runtime, claimed: Claimed, claim: Claim, retry_in: float
) -> None:
    """Every remaining candidate's breaker is open: wait for the soonest, not past the deadline."""
    job = claimed.job
    wait = min(max(retry_in, MIN_BREAKER_WAIT_S), runtime.settings.routing.breaker_wait_cap_s)
    if job.deadline_at is not None and utcnow() + timedelta(seconds=wait) >= job.deadline_at:
        reason = "every remaining candidate's circuit breaker stayed open until the deadline"
        await context.fail_job(claimed, claim, ErrorCode.NO_PROVIDER_AVAILABLE, reason)
        return
    log.info("every candidate's breaker is open; waiting", job_id=job.id, wait_s=round(wait, 3))
    await release(claimed.repo.session, claim, next_action_in=wait)


def _with_webhook(request: Any, url: str) -> Any:
    from dataclasses import replace

    return replace(request, webhook_url=url)


async def _record(
    runtime: Runtime,
    claim: Claim,
    provider: Provider,
    attempt_id: int,
    outcome: Submitted | Exception,
) -> None:
    wake = False
    async with runtime.sessions() as session:
        claimed = await context.load(
            session, Claim(claim.job_id, claim.epoch, states.Stage.SUBMITTING)
        )
        attempt = await session.get(Attempt, attempt_id)
        if claimed is None or attempt is None:
            log.warning("submit outcome arrived after losing the lease", job_id=claim.job_id)
            if attempt is not None and isinstance(outcome, Submitted):
                attempt.upstream_id = outcome.upstream_id  # keep it for reconciliation
                attempt.state = "orphaned"
                await session.commit()
            return
        claimed.attempt = attempt
        fenced = Claim(claim.job_id, claim.epoch, states.Stage.SUBMITTING)
        if isinstance(outcome, Submitted):
            attempt.upstream_id = outcome.upstream_id
            attempt.handle = dict(outcome.handle)
            attempt.state = "accepted"
            attempt.accepted_at = utcnow()
            timing = provider.poll_timing()
            if outcome.state is not None:  # synchronous upstream: the result is here already
                wake = await apply_state(claimed, fenced, outcome.state, timing)
            else:
                await claimed.repo.transition(
                    claim.job_id,
                    states.SUBMITTING,
                    states.UPSTREAM_QUEUED,
                    epoch=claim.epoch,
                    values={
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "poll_errors": 0,
                        "poll_interval_s": timing.first_poll_after,
                    },
                    detail={"upstream_id": outcome.upstream_id},
                    next_action_in=timing.first_poll_after,
                )
        elif isinstance(outcome, NotAccepted):
            context.finish_attempt(attempt, "not_accepted", "not_accepted", outcome.message)
            log.info(
                "not accepted", job_id=claim.job_id, provider=provider.name, reason=outcome.message
            )
            await _failover(claimed, fenced, outcome)
            wake = True
        elif isinstance(outcome, Rejected):
            context.finish_attempt(attempt, "failed", ErrorCode.INVALID_INPUT, outcome.message)
            await context.fail_job(
                claimed, fenced, ErrorCode.INVALID_INPUT, outcome.message, provider.name
            )
        else:
            attempt.state = "unknown"
            attempt.error_message = str(outcome)
            log.warning("submit outcome unknown", job_id=claim.job_id, provider=provider.name)
            await release(session, fenced, next_action_in=runtime.settings.submit_unknown_grace_s)
        await session.commit()
    await context.after_commit(runtime, claim.job_id, wake=wake)


async def _failover(claimed: Claimed, claim: Claim, error: NotAccepted) -> None:
    """NotAccepted: nothing was billed, so the next candidate may be tried at once.

    When no candidate is left, the same one is tried again after its ``Retry-After`` (or a
    growing back-off), a few times, before the job fails.
    """
    job = claimed.job
    if context.next_candidate(job) is not None:
        target_values: dict[str, Any] = {}
        delay, reason = 0.0, "not_accepted"
    elif job.poll_errors < NOT_ACCEPTED_RETRIES:
        target_values = {"attempt_count": job.attempt_count - 1, "poll_errors": job.poll_errors + 1}
        delay = max(error.retry_after or 0.0, 2.0**job.poll_errors)
        reason = "not_accepted_retry"
    else:
        await context.fail_job(
            claimed,
            claim,
            ErrorCode.NO_PROVIDER_AVAILABLE,
            f"no candidate accepted the job (last: {error.message})",
            job.provider,
        )
        return
    await claimed.repo.transition(
        job.id,
        claimed.state,
        states.QUEUED,
        epoch=claim.epoch,
        values={"lease_owner": None, "lease_expires_at": None, **target_values},
        detail={"failover": reason, "reason": error.message, "retry_in": delay},
        next_action_in=delay,
    )
