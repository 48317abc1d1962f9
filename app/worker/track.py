"""Tracking: poll an upstream job and apply what it says (the webhook path applies the same way).

Polling is adaptive: the first poll comes after the provider's typical queue time, later ones
back off by ``PollTiming.backoff`` up to its cap, and a ``Retry-After`` is always honoured.
Each upstream job's end is reported once to its provider's circuit breaker (``routing.health``).
"""

from __future__ import annotations

from dataclasses import asdict

from app.jobs import states
from app.jobs.service import attempt_ref
from app.kit.timeutil import utcnow
from app.providers.base import (
    ErrorCode,
    PollTiming,
    ProtocolViolation,
    TransientError,
    UpstreamState,
    UpstreamStatus,
)
from app.routing.health import result_health
from app.runtime import Runtime
from app.worker import context, deadlines
from app.worker.context import Claimed, log
from app.worker.leases import Claim, release


def next_interval(current: float | None, timing: PollTiming) -> float:
    interval = timing.first_poll_after if current is None else current * timing.backoff
    return max(timing.min_interval, min(interval, timing.cap))


async def poll(runtime: Runtime, claim: Claim) -> None:
    async with runtime.sessions() as session:
        claimed = await context.load(session, claim)
        if claimed is None or claimed.attempt is None or claimed.attempt.upstream_id is None:
            return
        provider = runtime.providers.get(claimed.attempt.provider)
        job = claimed.job
        if provider is None:
            await context.fail_job(
                claimed, claim, ErrorCode.UPSTREAM_ERROR, "provider no longer configured"
            )
            await session.commit()
            await context.after_commit(runtime, job.id)
            return
        ref = attempt_ref(job, claimed.attempt)
        if job.deadline_at is not None and job.deadline_at <= utcnow():
            code = ErrorCode.DEADLINE_EXCEEDED
            context.finish_attempt(claimed.attempt, "cancelled", code, deadlines.REASON)
            failed = await context.fail_job(claimed, claim, code, deadlines.REASON)
            await session.commit()
            await context.after_commit(runtime, job.id)
            if failed:
                await deadlines.cancel_abandoned_upstream(provider, ref, deadlines.REASON)
            return
    timing = provider.poll_timing()
    try:
        state = await provider.poll(ref)
    except TransientError as exc:
        await _poll_failed(runtime, claim, claimed, timing, exc)
        return
    except ProtocolViolation as exc:
        state = UpstreamState(
            UpstreamStatus.FAILED,
            "protocol_violation",
            error_code=ErrorCode.UPSTREAM_ERROR,
            error_message=exc.message,
        )
        log.warning("upstream answer not understood", job_id=claim.job_id, reason=exc.message)
    async with runtime.sessions() as session:
        claimed = await context.load(session, claim)
        if claimed is None or claimed.attempt is None:
            return
        first_word = claimed.attempt.finished_at is None  # not yet reported to the breaker
        wake = await apply_state(claimed, claim, state, timing)
        await session.commit()
    await context.after_commit(runtime, claim.job_id, wake=wake)
    if first_word and state.status.is_terminal:
        await runtime.health.report_result(provider.name, result_health(state))


async def _poll_failed(
    runtime: Runtime, claim: Claim, claimed: Claimed, timing: PollTiming, exc: TransientError
) -> None:
    async with runtime.sessions() as session:
        fresh = await context.load(session, claim)
        if fresh is None:
            return
        errors = fresh.job.poll_errors + 1
        log.info("poll failed", job_id=claim.job_id, errors=errors, reason=exc.message)
        if errors >= runtime.settings.max_poll_errors:
            await context.fail_job(
                fresh,
                claim,
                ErrorCode.UPSTREAM_TIMEOUT,
                f"the upstream stopped answering ({exc.message})",
                fresh.job.provider,
            )
            await session.commit()
            await context.after_commit(runtime, claim.job_id)
            if fresh.job.provider is not None:
                await runtime.health.report_result(fresh.job.provider, False)
            return
        interval = next_interval(fresh.job.poll_interval_s, timing)
        wait = max(interval, exc.retry_after or 0.0)
        await release(
            session,
            claim,
            next_action_in=wait,
            values={"poll_errors": errors, "poll_interval_s": interval},
        )
        await session.commit()


async def apply_state(
    claimed: Claimed, claim: Claim, state: UpstreamState, timing: PollTiming
) -> bool:
    """Move the job as the upstream's state says; returns True when workers should wake."""
    job, attempt = claimed.job, claimed.attempt
    assert attempt is not None
    attempt.poll_count += 1
    attempt.last_upstream_status = state.raw_status[:60]
    current = claimed.state
    release_lease = {"lease_owner": None, "lease_expires_at": None, "poll_errors": 0}
    if state.status in (UpstreamStatus.QUEUED, UpstreamStatus.RUNNING):
        target = states.RUNNING if state.status is UpstreamStatus.RUNNING else current
        interval = next_interval(job.poll_interval_s, timing)
        values = {**release_lease, "poll_interval_s": interval}
        if target != current and target in states.TRANSITIONS[current]:
            await claimed.repo.transition(
                job.id, current, target, epoch=claim.epoch, values=values, next_action_in=interval
            )
        else:
            await release(claimed.repo.session, claim, next_action_in=interval, values=values)
        return False
    if state.status is UpstreamStatus.SUCCEEDED:
        attempt.state = "succeeded"
        attempt.finished_at = utcnow()
        attempt.outputs = [asdict(o) for o in state.outputs]
        attempt.seed = state.seed
        attempt.reported_cost_micros = state.cost_micros
        await claimed.repo.transition(
            job.id,
            current,
            states.FINALIZING,
            epoch=claim.epoch,
            values=release_lease,
            detail={"outputs": len(state.outputs)},
            next_action_in=0,
        )
        return True
    code = state.error_code or ErrorCode.UPSTREAM_ERROR
    message = state.error_message or f"the upstream reported {state.raw_status}"
    context.finish_attempt(attempt, "failed", code, message)
    if code is ErrorCode.UPSTREAM_ERROR and job.allow_fallbacks and context.next_candidate(job):
        await claimed.repo.transition(
            job.id,
            current,
            states.QUEUED,
            epoch=claim.epoch,
            values=release_lease,
            detail={"failover": code.value, "reason": message},
            next_action_in=0,
        )
        return True
    await context.fail_job(claimed, claim, code, message, attempt.provider)
    return False


async def reconcile(runtime: Runtime, claim: Claim) -> None:
    """A job still in ``submitting`` after the grace period (its dispatcher died or never
    recorded the upstream's answer). If the attempt learnt its upstream id meanwhile (a late
    record that lost the race, an upstream webhook), the job is adopted and polled; otherwise the
    outcome stays unknown and the job fails: never resubmitted."""
    async with runtime.sessions() as session:
        claimed = await context.load(session, claim)
        if claimed is None:
            return
        attempt = claimed.attempt
        if attempt is not None and attempt.upstream_id and attempt.finished_at is None:
            attempt.state = "accepted"
            await claimed.repo.transition(
                claim.job_id,
                claimed.state,
                states.UPSTREAM_QUEUED,
                epoch=claim.epoch,
                values={"lease_owner": None, "lease_expires_at": None, "poll_errors": 0},
                detail={"upstream_id": attempt.upstream_id, "adopted": True},
                next_action_in=0,
            )
            await session.commit()
            await context.after_commit(runtime, claim.job_id, wake=True)
            return
        if attempt is not None:
            context.finish_attempt(
                attempt, "unknown", ErrorCode.SUBMIT_OUTCOME_UNKNOWN, "no confirmation"
            )
        await context.fail_job(
            claimed,
            claim,
            ErrorCode.SUBMIT_OUTCOME_UNKNOWN,
            "the upstream may have accepted the job but never confirmed it; it was not resubmitted",
            claimed.job.provider,
        )
        await session.commit()
    await context.after_commit(runtime, claim.job_id)
