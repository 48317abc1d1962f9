"""All SQL on jobs, attempts and job events. Callers own the transaction (the edge commits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CTE, Select, Table, bindparam, func, insert, inspect, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import db_now
from app.jobs.states import JobState, check_transition
from app.jobs.transitions import Transition, on_transition
from app.kit.timeutil import utcnow
from app.models import ApiKey, Attempt, Job, JobEvent, LedgerEntry, Team


@dataclass(frozen=True, slots=True)
class JobFilters:
    status: str | None = None
    provider: str | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """The budget reservation written with a job at admission (see ``app.budgets.service``)."""

    amount_micros: int
    month: str


# Job attribute -> column, in mapper order ("meta" is the "metadata" column).
_JOB_COLUMNS = {attr.key: attr.columns[0] for attr in inspect(Job).column_attrs}
_JOB_PARAMS = {key: f"job_{column.name}" for key, column in _JOB_COLUMNS.items()}
_JOBS = cast(Table, Job.__table__)
_EVENTS = cast(Table, JobEvent.__table__)
_LEDGER = cast(Table, LedgerEntry.__table__)
_admission_statements: dict[tuple[str, ...], Select[Any]] = {}


def _insert_for(new_job: CTE, table: Table, name: str, values: dict[str, Any]) -> CTE:
    """``INSERT INTO table (job_id, ...) SELECT new_job.id, ...``: a row for the job inserted by
    ``new_job``, if any. A value is a bound parameter's name or a SQL expression."""
    columns = [table.c.job_id, *(table.c[column] for column in values)]
    row = [
        new_job.c.id,
        *(
            bindparam(value, type_=table.c[column].type) if isinstance(value, str) else value
            for column, value in values.items()
        ),
    ]
    return insert(table).from_select(columns, select(*row)).cte(name)


def _admission_statement(attributes: tuple[str, ...]) -> Select[Any]:
    """One PostgreSQL statement: read the team's and key's budgets and, only when neither has
    one, insert the job (the given attributes, due now), its first event and its budget hold.

    The statement is built once per attribute set with named parameters, so SQLAlchemy compiles
    it once. Only the attributes the job has are inserted, as the unit of work would: an unset
    JSON attribute stays SQL NULL, an explicit ``None`` is JSON ``null``.
    """
    limits = (
        select(
            Team.monthly_budget_micros.label("team_budget"),
            ApiKey.monthly_budget_micros.label("key_budget"),
        )
        .select_from(Team)
        .outerjoin(ApiKey, (ApiKey.id == bindparam("budget_key_id")) & (ApiKey.team_id == Team.id))
        .where(Team.id == bindparam("budget_team_id"))
        .cte("limits")
    )
    columns = [_JOB_COLUMNS[a] for a in attributes]
    job_values = [bindparam(f"job_{c.name}", type_=c.type) for c in columns]
    new_job = (
        insert(_JOBS)
        .from_select(
            [*columns, _JOBS.c.next_action_at],
            select(*job_values, db_now()).where(
                limits.c.team_budget.is_(None), limits.c.key_budget.is_(None)
            ),
        )
        .returning(_JOBS.c.id)
        .cte("new_job")
    )
    new_event = _insert_for(
        new_job,
        _EVENTS,
        "new_event",
        {
            "seq": literal(1),
            "status": "job_status",
            "stage": "job_stage",
            "detail": "event_detail",
            "created_at": "event_created_at",
        },
    )
    new_hold = _insert_for(
        new_job,
        _LEDGER,
        "new_hold",
        {
            "team_id": "budget_team_id",
            "api_key_id": "budget_key_id",
            "kind": literal("reserve"),
            "amount_micros": "hold_amount_micros",
            "month": "hold_month",
            "created_at": "hold_created_at",
        },
    )
    admitted = select(func.count()).select_from(new_job).scalar_subquery()
    return select(limits.c.team_budget, limits.c.key_budget, admitted.label("admitted")).add_cte(
        new_event, new_hold
    )


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_unless_budgeted(
        self, job: Job, detail: dict[str, Any] | None, hold: Hold
    ) -> bool:
        """Admit ``job`` in one round trip when its team and key have no monthly budget.

        On PostgreSQL the budget read and the three inserts of ``insert`` plus
        ``budgets.reserve`` (job, first event, hold) are one statement, inside the caller's
        transaction if it has begun one, else committed on its own; it reads the budgets as the
        separate SELECT would, at the statement's snapshot. Returns False, having written
        nothing, when a budget applies (the caller then takes the locked path of
        ``app.budgets``), when the team is unknown, or on SQLite.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            return False
        job.event_seq = 1
        values = job.__dict__  # the attributes as set, read without the instrumentation
        attributes = tuple(a for a in _JOB_COLUMNS if a in values and a != "next_action_at")
        statement = _admission_statements.get(attributes)
        if statement is None:
            statement = _admission_statements[attributes] = _admission_statement(attributes)
        now = utcnow()
        params: dict[str, Any] = {_JOB_PARAMS[a]: values[a] for a in attributes}
        params.update(
            budget_team_id=job.team_id,
            budget_key_id=job.api_key_id,
            event_detail=detail,
            event_created_at=now,
            hold_amount_micros=hold.amount_micros,
            hold_month=hold.month,
            hold_created_at=now,
        )
        # Alone in its session (the common case: no idempotency key, no reuse lookup), the one
        # statement is its own transaction: AUTOCOMMIT spares the BEGIN and COMMIT round trips
        # and it is committed, all or nothing, when it returns.
        alone = not self.session.in_transaction()
        if alone:
            await self.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        row = (await self.session.execute(statement, params)).one_or_none()
        admitted = row is not None and bool(row.admitted)
        if alone and not admitted:
            await self.session.rollback()  # nothing was written; the locked path needs a real one
        return admitted

    async def insert(self, job: Job, detail: dict[str, Any] | None = None) -> None:
        job.event_seq = 1
        # Due "now" by the database clock, which every worker compares against.
        job.next_action_at = cast(Any, db_now())
        self.session.add(job)
        self.session.add(
            JobEvent(job_id=job.id, seq=1, status=job.status, stage=job.stage, detail=detail)
        )

    async def get(self, job_id: str, team_id: str | None = None) -> Job | None:
        query = select(Job).where(Job.id == job_id)
        if team_id is not None:
            query = query.where(Job.team_id == team_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def get_by_idempotency_key(self, api_key_id: str, key: str) -> Job | None:
        query = select(Job).where(Job.api_key_id == api_key_id, Job.idempotency_key == key)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def attempts(self, job_id: str) -> Sequence[Attempt]:
        query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)
        return (await self.session.execute(query)).scalars().all()

    async def attempts_for(self, job_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {job_id: [] for job_id in job_ids}
        if job_ids:
            query = select(Attempt).where(Attempt.job_id.in_(job_ids)).order_by(Attempt.id)
            for attempt in (await self.session.execute(query)).scalars():
                out[attempt.job_id].append(attempt)
        return out

    async def list(
        self, team_id: str | None, filters: JobFilters, limit: int, before_id: str | None
    ) -> Sequence[Job]:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if team_id is not None:
            query = query.where(Job.team_id == team_id)
        if before_id is not None:
            query = query.where(Job.id < before_id)
        if filters.status is not None:
            query = query.where(Job.status == filters.status)
        if filters.provider is not None:
            query = query.where(Job.provider == filters.provider)
        if filters.model is not None:
            query = query.where(Job.model == filters.model)
        if filters.created_after is not None:
            query = query.where(Job.created_at >= filters.created_after)
        if filters.created_before is not None:
            query = query.where(Job.created_at < filters.created_before)
        return (await self.session.execute(query)).scalars().all()

    async def transition(
        self,
        job_id: str,
        current: JobState,
        target: JobState,
        *,
        epoch: int | None,
        values: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        next_action_in: float | None = None,
    ) -> bool:
        """Move a job if it is still in ``current`` (and, for workers, still under ``epoch``).

        Returns False when zero rows matched: someone else moved the job or took the lease.
        """
        check_transition(current, target)
        now = utcnow()
        changes: dict[str, Any] = {
            "status": target.status.value,
            "stage": target.stage.value,
            "updated_at": now,
            "event_seq": Job.event_seq + 1,
            **(values or {}),
        }
        if target.is_terminal:
            changes.update(next_action_at=None, lease_owner=None, lease_expires_at=None)
            changes.setdefault("completed_at", now)
        elif next_action_in is not None:
            changes["next_action_at"] = db_now(next_action_in)
        query = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == current.status.value,
                Job.stage == current.stage.value,
            )
            .values(changes)
            .returning(Job)
            .execution_options(populate_existing=True)
        )
        if epoch is not None:
            query = query.where(Job.lease_epoch == epoch)
        job = (await self.session.execute(query)).scalar_one_or_none()
        if job is None:
            return False
        self.session.add(
            JobEvent(
                job_id=job_id,
                seq=job.event_seq,
                status=target.status.value,
                stage=target.stage.value,
                detail=detail,
            )
        )
        await on_transition(self.session, Transition(job, current, target))
        return True

    async def completed_by_reuse_key(
        self, team_id: str, reuse_key: str, limit: int = 5
    ) -> Sequence[Job]:
        """The team's newest completed jobs with this reuse key (result reuse)."""
        query = (
            select(Job)
            .where(Job.team_id == team_id, Job.reuse_key == reuse_key, Job.status == "completed")
            .order_by(Job.id.desc())
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def events_after(self, job_id: str, seq: int, limit: int = 100) -> Sequence[JobEvent]:
        """A job's transitions after ``seq``, in order (the SSE stream's source)."""
        query = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > seq)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def count_by_status(self) -> dict[str, int]:
        query = select(Job.status, func.count()).group_by(Job.status)
        rows = (await self.session.execute(query)).all()
        return {status: int(count) for status, count in rows}
