"""The client-webhook outbox: one row per subscribed job event, written in its transition's
transaction.

Events: ``processing`` (the job starts running upstream; once per job, even across failover),
``completed``, ``failed`` and ``cancelled``; a job receives those listed in its
``webhook_events``. The row holds a snapshot of the job document at the event (signed URLs are
added at each send, so they are fresh whenever the try happens). Because the row commits or
rolls back with the transition, a transition that rolled back is never announced, and one that
committed is announced even if the process dies the next instant.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.jobs.states import Status
from app.kit.ids import new_id
from app.models import Job, WebhookDelivery
from app.webhooks.repository import PENDING, DeliveryRepository
from app.webhooks.secrets import team_webhook_secret

if TYPE_CHECKING:
    from app.jobs.transitions import Transition

# Test-only failpoint (multi-process tests): the process kills itself right after the commit of
# a terminal transition, before anything else can happen. Never set in production.
FAILPOINTS_ENV = "IMAGEGATE_FAILPOINTS"
KILL_AFTER_TERMINAL_COMMIT = "kill_after_terminal_commit"


def event_of(transition: Transition) -> str | None:
    """The webhook event a transition is, if any."""
    current, previous = transition.current, transition.previous
    if current.is_terminal:
        return current.status.value
    if current.status is Status.PROCESSING and previous.status is not Status.PROCESSING:
        return "processing"
    return None


async def on_transition(session: AsyncSession, transition: Transition) -> None:
    """Queue a delivery when the job's webhook subscribes to this transition's event."""
    if transition.current.is_terminal and KILL_AFTER_TERMINAL_COMMIT in os.environ.get(
        FAILPOINTS_ENV, ""
    ):
        _kill_after_commit(session)
    name = event_of(transition)
    if name is not None:
        await enqueue(session, transition.job, name)


async def enqueue(session: AsyncSession, job: Job, event: str) -> WebhookDelivery | None:
    """Add the outbox row for ``event`` of ``job`` (at most one per job and event)."""
    if not job.webhook_url or event not in (job.webhook_events or ()):
        return None
    repo = DeliveryRepository(session)
    if await repo.enqueue_blocked(job.id, event):
        return None
    await team_webhook_secret(session, job.team_id)  # the team's first webhook creates it
    delivery = WebhookDelivery(
        webhook_id=new_id("msg"),
        job_id=job.id,
        team_id=job.team_id,
        event=event,
        url=job.webhook_url,
        payload=await _snapshot(session, job),
        state=PENDING,
        attempts=0,
    )
    repo.add(delivery)
    return delivery


async def _snapshot(session: AsyncSession, job: Job) -> dict[str, object]:
    from app.jobs.repository import JobRepository
    from app.jobs.views import job_document

    # Attempts changed or added earlier in this transaction must be in the snapshot.
    await session.flush()
    attempts = await JobRepository(session).attempts(job.id)
    return job_document(job, attempts)


def _kill_after_commit(session: AsyncSession) -> None:
    def die(_: Session) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    sa_event.listen(session.sync_session, "after_commit", die, once=True)
