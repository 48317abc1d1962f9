"""Applying an inbound upstream webhook through the same path as a poll.

A verified update (e.g. Replicate's Standard Webhooks signature) is applied at once under a
short lease of its own, exactly as a poll result would be; an unverified one (fal, Novita,
core.today) only makes the job due for one confirming poll. Replays of an event id change
nothing, and the state machine ignores stale states (``processing`` after ``succeeded``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.inbound.repository import InboundRepository
from app.jobs import states
from app.jobs.repository import JobRepository
from app.providers.base import Provider, WebhookUpdate
from app.routing.health import result_health
from app.runtime import Runtime
from app.worker import context
from app.worker.leases import Claim, claim_job, poll_soon, release
from app.worker.track import apply_state

LEASE_S = 30.0


class Outcome(StrEnum):
    APPLIED = "applied"
    POLL_SCHEDULED = "poll_scheduled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # unknown job or already finished: nothing to do
    BUSY = "busy"  # a worker holds the job right now; the upstream should retry


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    job_id: str | None = None


async def apply_webhook(
    runtime: Runtime, provider: Provider, update: WebhookUpdate, job_hint: str | None
) -> Applied:
    async with runtime.sessions() as session:
        inbound = InboundRepository(session)
        attempt = await inbound.attempt_by_upstream_id(provider.name, update.upstream_id)
        if attempt is None and job_hint and update.verified:
            # A submit whose answer we never got: the upstream's webhook adopts it.
            attempt = await inbound.unconfirmed_attempt(provider.name, job_hint)
            if attempt is not None:
                attempt.upstream_id = update.upstream_id
                attempt.state = "accepted"
        if attempt is None:
            return Applied(Outcome.IGNORED)
        job_id = attempt.job_id
        if update.event_id and not await inbound.first_receipt(
            provider.name, update.event_id, job_id
        ):
            return Applied(Outcome.DUPLICATE, job_id)
        if not update.verified or update.state is None:
            scheduled = await poll_soon(session, job_id)
            await session.commit()
            if scheduled:
                await runtime.signals.notify("wake")
            return Applied(Outcome.POLL_SCHEDULED if scheduled else Outcome.IGNORED, job_id)
        claim = await claim_job(session, job_id, "webhook", lease_s=LEASE_S)
        if claim is None:
            job = await JobRepository(session).get(job_id)
            await session.commit()
            busy = job is not None and job.lease_owner is not None
            return Applied(Outcome.BUSY if busy else Outcome.IGNORED, job_id)
        claimed = await context.load(session, claim)
        if claimed is None or claimed.attempt is None or claimed.attempt.id != attempt.id:
            await release(session, claim, next_action_in=0)
            await session.commit()
            return Applied(Outcome.IGNORED, job_id)
        if claimed.state == states.SUBMITTING:
            # Adopted: from now on it is a tracked upstream job like any other.
            await claimed.repo.transition(
                job_id, claimed.state, states.UPSTREAM_QUEUED, epoch=claim.epoch
            )
            claimed.job.status, claimed.job.stage = "pending", states.Stage.UPSTREAM_QUEUED.value
            claim = Claim(job_id, claim.epoch, states.Stage.UPSTREAM_QUEUED)
        first_word = claimed.attempt.finished_at is None  # not yet reported to the breaker
        wake = await apply_state(claimed, claim, update.state, provider.poll_timing())
        await session.commit()
    await context.after_commit(runtime, job_id, wake=wake)
    if first_word and update.state.status.is_terminal:
        await runtime.health.report_result(provider.name, result_health(update.state))
    return Applied(Outcome.APPLIED, job_id)
