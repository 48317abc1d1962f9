"""Listeners that act inside the transaction of every job transition.

Budgets settle and refund, the client-webhook outbox gets its row, metrics count: all in the same
transaction as the state change, so a rolled-back transition leaves no trace in any of them.
Each listener lives in its own feature and is listed here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.states import JobState
from app.models import Job


@dataclass(frozen=True, slots=True)
class Transition:
    job: Job  # the row as it is after the update
    previous: JobState
    current: JobState


async def on_transition(session: AsyncSession, transition: Transition) -> None:
    from app.budgets.service import on_transition as budgets
    from app.metrics.jobs import on_transition as metrics
    from app.webhooks.outbox import on_transition as outbox

    await budgets(session, transition)
    await outbox(session, transition)
    metrics(transition)
