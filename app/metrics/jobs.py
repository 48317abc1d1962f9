"""Job metrics: jobs created and finished, their duration, their cost and stored images.

A metric must not count what the database did not keep: a transition whose transaction rolls
back never happened. So nothing is counted on the spot: each observation is staged on the
session (``session.info``) together with the transaction it belongs to, applied after the
outermost COMMIT, and dropped if that transaction, or the savepoint it was made in, rolls back.

Created jobs: a ``Job`` that a flush inserts is a created job (admission is the only place that
inserts one), seen by the ``after_flush`` session event; admission's single-statement insert on
PostgreSQL bypasses the flush and stages its count with ``job_admitted`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, object_session

from app.metrics.registry import (
    IMAGES_STORED,
    JOB_COST_MICROS,
    JOB_SECONDS,
    JOBS_CREATED,
    JOBS_FINISHED,
    UNROUTED,
)
from app.models import Job

if TYPE_CHECKING:
    from app.jobs.transitions import Transition

log = structlog.get_logger(__name__)

_PENDING = "imagegate.metrics.pending"

Staged = tuple[SessionTransaction, Callable[[], None]]


def on_transition(transition: Transition) -> None:
    """Count a job's terminal transition (runs inside the transition's transaction)."""
    if not transition.current.is_terminal:
        return
    job = transition.job
    provider = job.provider or UNROUTED
    status = transition.current.status.value
    seconds = None
    if job.completed_at is not None and job.created_at is not None:
        seconds = max(0.0, (job.completed_at - job.created_at).total_seconds())
    images = len((job.result or {}).get("images") or ()) if status == "completed" else 0
    record = partial(
        _finished, provider, job.model, status, job.team_id, job.actual_cost_micros, seconds, images
    )
    _stage(object_session(job), record)


def _finished(
    provider: str,
    model: str,
    status: str,
    team: str,
    cost_micros: int | None,
    seconds: float | None,
    images: int,
) -> None:
    JOBS_FINISHED.labels(provider, model, status).inc()
    if seconds is not None:
        JOB_SECONDS.labels(provider, status).observe(seconds)
    if cost_micros is not None and cost_micros > 0:
        JOB_COST_MICROS.labels(provider, team).inc(cost_micros)
    if images:
        IMAGES_STORED.labels(provider).inc(images)


def _created(provider: str, model: str) -> None:
    JOBS_CREATED.labels(provider, model).inc()


def _stage(session: Session | None, record: Callable[[], None]) -> None:
    transaction = None
    if session is not None:
        transaction = session.get_nested_transaction() or session.get_transaction()
    if session is None or transaction is None:
        record()  # not in a transaction: nothing can undo it
        return
    pending: list[Staged] = session.info.setdefault(_PENDING, [])
    pending.append((transaction, record))


def _within(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


def job_admitted(session: Session, job: Job) -> None:
    """Count a job that admission inserted without the unit of work (a Core statement)."""
    plan = job.route_plan or []
    provider = str(plan[0]["provider"]) if plan else UNROUTED
    _stage(session, partial(_created, provider, job.model))


@event.listens_for(Session, "after_flush")
def _on_flush(session: Session, _context: Any) -> None:
    for instance in session.new:
        if isinstance(instance, Job):
            job_admitted(session, instance)


@event.listens_for(Session, "after_commit")
def _on_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: its observations wait for the outermost commit
    for _, record in session.info.pop(_PENDING, ()):
        try:
            record()
        except Exception:  # the commit is done: a metrics bug must not look like its failure
            log.exception("metrics observation failed")


@event.listens_for(Session, "after_soft_rollback")
def _on_rollback(session: Session, previous: SessionTransaction) -> None:
    pending: list[Staged] | None = session.info.get(_PENDING)
    if pending:
        pending[:] = [(t, record) for t, record in pending if not _within(t, previous)]


@event.listens_for(Session, "after_transaction_end")
def _on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost ended without a commit (e.g. closed)
        session.info.pop(_PENDING, None)
