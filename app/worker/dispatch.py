"""Dispatch: submit a queued job to its next route candidate, paying at most once.

Transaction 1 records the attempt in ``submitting`` before anything is sent. If the process dies
after sending, the reaper finds the attempt and never resubmits. Transaction 2 records what the
upstream said.

The upstream's answer is a fact about the attempt, and it is known only in this process, so
transaction 2 is retried through a database outage. The dispatch lease may run out meanwhile and
the reaper fence this worker; the job then waits out ``submit_unknown_grace_s`` in
``submitting``, unleased. Recording takes the job's lease again (``reclaim_submitting``) and writes
the answer only while the attempt is still undecided (no upstream id but this one, not finished).
The reconcile step that would declare the outcome unknown holds the same lease, so whichever
comes first decides and the other finds the job moved on: never two verdicts, never a resubmit.
A lost race keeps the upstream id on the attempt, so every paid submission stays known.

The candidate is the next one in the job's plan whose circuit breaker admits a submit (see
``routing.selection``); every submit's outcome is reported to the breaker. When every remaining
candidate's breaker is open the job waits for the soonest to half-open, within its deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs import states
from app.jobs.service import attempt_ref
from app.kit.timeutil import utcnow
from app.models import Attempt, Job
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
from app.worker import context, deadlines
from app.worker.context import Claimed, log
from app.worker.leases import Claim, reclaim_submitting, release
from app.worker.track import apply_state

NOT_ACCEPTED_RETRIES = 4
RECORD_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
RETAKEN_OWNER = "dispatch:retaken"
MIN_BREAKER_WAIT_S = 0.05


COMMIT_ERRORS = (DBAPIError, SQLAlchemyTimeout, OSError)


@dataclass(frozen=True, slots=True)
class Ready:
    """A job in ``submitting`` under our lease, with its attempt recorded and nothing sent yet."""

    claim: Claim
    provider: Provider
    attempt_id: int
    request: Any
    ticket: Ticket


async def dispatch(runtime: Runtime, claim: Claim) -> None:
    ready = await _prepare(runtime, claim)
    if ready is None:
        return
    provider = ready.provider
    try:
        submitted: Submitted | Exception = await provider.submit(ready.request)
    except (NotAccepted, OutcomeUnknown, Rejected) as exc:
        submitted = exc
    except Exception as exc:  # a bug or an unclassified failure: treat as unknown, never resubmit
        log.exception("submit raised unexpectedly", job_id=claim.job_id, provider=provider.name)
        submitted = OutcomeUnknown(f"unexpected {type(exc).__name__}: {exc}")
    try:
        await runtime.health.report_submit(provider.name, ready.ticket, submitted)
    except Exception as exc:  # the breaker is advisory; the answer must still be recorded
        log.warning("reporting a submit to the breaker failed", error=type(exc).__name__)
    # Giving up here would turn a known outcome into `submit_outcome_unknown`: keep trying
    # through a database blip (the last failure goes to the runner, which hands the job back).
    for delay in (*RECORD_RETRY_DELAYS, None):
        try:
            await _record(runtime, ready.claim, provider, ready.attempt_id, submitted)
            return
        except COMMIT_ERRORS as exc:
            if delay is None:
                raise
            log.warning("recording a submit outcome failed; retrying", error=type(exc).__name__)
            await asyncio.sleep(delay)


async def _prepare(runtime: Runtime, claim: Claim) -> Ready | None:
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
        await session.flush()  # its id, to find it again should the commit's answer be lost
        attempt_id = attempt.id
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
        try:
            await session.commit()
        except COMMIT_ERRORS:
            held = await _find_unsent(runtime, claim, attempt_id)
            if held is None:
                await _give_back_quietly(runtime, provider.name, ticket)
                raise  # still queued under our lease: the runner hands it back
            claim, job, attempt = held[1], held[0].job, held[0].attempt or attempt
    await context.after_commit(runtime, job.id)
    request = attempt_ref(job, attempt).request
    if runtime.settings.public_base_url:
        hook = f"{runtime.settings.public_base_url}/v1/providers/{provider.name}/webhook"
        request = _with_webhook(request, f"{hook}?job_id={job.id}")
    return Ready(claim, provider, attempt_id, request, ticket)


async def _find_unsent(
    runtime: Runtime, claim: Claim, attempt_id: int
) -> tuple[Claimed, Claim] | None:
    """The commit that moved the job to ``submitting`` lost its answer (the connection dropped):
    find out, through the outage, whether it landed.

    If it did, the attempt is ours and nothing was sent, so the submit goes ahead, under our
    lease or under a new one when the reaper fenced us meanwhile (``_hold``). Otherwise the job
    is still queued and None is returned. Without this a job whose commit landed would sit in
    ``submitting`` for the whole grace period and then fail ``submit_outcome_unknown``,
    although it was never sent.
    """
    for delay in (*RECORD_RETRY_DELAYS, None):
        try:
            async with runtime.sessions() as session:
                held = await _hold(runtime, session, claim, attempt_id)
                await (session.rollback() if held is None else session.commit())
                return held
        except COMMIT_ERRORS as exc:
            if delay is None:
                raise
            log.warning("checking a submit's commit failed; retrying", error=type(exc).__name__)
            await asyncio.sleep(delay)
    return None


async def _give_back_quietly(runtime: Runtime, provider: str, ticket: Ticket) -> None:
    try:
        await runtime.health.give_back(provider, ticket)
    except Exception as exc:
        log.warning("giving a breaker ticket back failed", error=type(exc).__name__)


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
        held = await _hold(runtime, session, claim, attempt_id)
        if held is None or (
            isinstance(outcome, Submitted) and not await _accept(session, attempt_id, outcome)
        ):
            await session.rollback()
            await _lost(session, provider, claim, attempt_id, outcome)
            return
        claimed, fenced = held
        attempt = claimed.attempt
        assert attempt is not None
        if isinstance(outcome, Submitted):
            timing = provider.poll_timing()
            if outcome.state is not None:  # synchronous upstream: the result is here already
                wake = await apply_state(claimed, fenced, outcome.state, timing)
            else:
                await claimed.repo.transition(
                    claim.job_id,
                    states.SUBMITTING,
                    states.UPSTREAM_QUEUED,
                    epoch=fenced.epoch,
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


async def _hold(
    runtime: Runtime, session: AsyncSession, claim: Claim, attempt_id: int
) -> tuple[Claimed, Claim] | None:
    """The job under a lease of ours, with ``attempt_id`` its live, undecided attempt; or None.

    Normally the dispatch lease is still ours. If it was fenced meanwhile, the job is leased
    again when it is still in ``submitting`` and unleased (see the module docstring).
    """
    fenced = Claim(claim.job_id, claim.epoch, states.Stage.SUBMITTING)
    if not await _lock_if_ours(session, fenced):
        again = await reclaim_submitting(
            session, claim.job_id, RETAKEN_OWNER, lease_s=runtime.settings.lease_ttl_s
        )
        if again is None:
            return None
        log.info("recording a submit outcome under a new lease", job_id=claim.job_id)
        fenced = again
    claimed = await context.load(session, fenced)
    attempt = None if claimed is None else claimed.attempt
    if claimed is None or attempt is None or attempt.id != attempt_id or _decided(attempt):
        return None  # not a state this dispatch left; the caller rolls back any lease it took
    return claimed, fenced


async def _lock_if_ours(session: AsyncSession, claim: Claim) -> bool:
    """Is the lease still ours? On PostgreSQL the row stays locked until the commit, so the
    reaper cannot fence us between this check and our writes (SQLite's writer lock does that)."""
    query = select(Job.lease_epoch).where(Job.id == claim.job_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none() == claim.epoch


def _decided(attempt: Attempt) -> bool:
    return attempt.finished_at is not None or attempt.state not in ("submitting", "accepted")


async def _accept(session: AsyncSession, attempt_id: int, submitted: Submitted) -> bool:
    """Record the upstream's acceptance on the attempt, only while it is undecided and names no
    other upstream job (an upstream webhook may have named this one already)."""
    result = await session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id,
            Attempt.finished_at.is_(None),
            Attempt.state.in_(("submitting", "accepted")),
            or_(Attempt.upstream_id.is_(None), Attempt.upstream_id == submitted.upstream_id),
        )
        .values(
            upstream_id=submitted.upstream_id,
            handle=dict(submitted.handle),
            state="accepted",
            accepted_at=utcnow(),
        )
        .returning(Attempt)
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none() is not None


async def _lost(
    session: AsyncSession,
    provider: Provider,
    claim: Claim,
    attempt_id: int,
    outcome: Submitted | Exception,
) -> None:
    """Someone else decided the job first (a reconcile, a webhook, a client's cancel).

    Their verdict stands. An upstream id we learnt is still kept on the attempt when it has none,
    so the paid submission stays known (and an adopting reconcile can poll it). When that verdict
    ended the job (outcome unknown, cancelled, deadline), the upstream job is cancelled where the
    provider can, so a result nobody will collect stops costing money.
    """
    log.warning(
        "submit outcome arrived after the job moved on",
        job_id=claim.job_id,
        outcome=type(outcome).__name__,
    )
    if not isinstance(outcome, Submitted):
        return
    await session.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.upstream_id.is_(None))
        .values(upstream_id=outcome.upstream_id, handle=dict(outcome.handle))
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    job = await session.get(Job, claim.job_id, populate_existing=True)
    attempt = await session.get(Attempt, attempt_id, populate_existing=True)
    if job is None or attempt is None or job.status not in ("failed", "cancelled"):
        return
    if attempt.upstream_id != outcome.upstream_id:
        return  # the attempt names another upstream job: not ours to cancel
    ref = replace(attempt_ref(job, attempt), handle=dict(outcome.handle))
    await deadlines.cancel_abandoned_upstream(provider, ref, f"job {job.status} before its submit")


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
