"""All SQL on budgets and the ledger. Callers own the transaction (the edge commits)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import case, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.timeutil import utcnow
from app.models import ApiKey, LedgerEntry, Team


@dataclass(frozen=True, slots=True)
class Budgets:
    """The monthly limits that apply to one admission; None means unlimited."""

    team_micros: int | None
    key_micros: int | None

    @property
    def any(self) -> bool:
        return self.team_micros is not None or self.key_micros is not None


@dataclass(frozen=True, slots=True)
class Committed:
    """SUM(amount) for a month: settled spend plus reservations still held."""

    team_micros: int
    key_micros: int


@dataclass(frozen=True, slots=True)
class Reservation:
    amount_micros: int
    month: str


@dataclass(frozen=True, slots=True)
class Balance:
    """A month's figures for a team (or one key), each a SUM over ledger rows."""

    spent_micros: int  # settle rows
    reserved_micros: int  # reserve + refund rows: holds of jobs not yet ended

    @property
    def committed_micros(self) -> int:
        return self.spent_micros + self.reserved_micros


def advisory_key(team_id: str) -> int:
    """A stable signed 64-bit lock id per team (Python's ``hash`` differs between processes)."""
    digest = hashlib.sha256(b"imagegate:budget:" + team_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def budgets(self, team_id: str, api_key_id: str | None) -> Budgets:
        query = (
            select(Team.monthly_budget_micros, ApiKey.monthly_budget_micros)
            .select_from(Team)
            .outerjoin(ApiKey, (ApiKey.id == api_key_id) & (ApiKey.team_id == Team.id))
            .where(Team.id == team_id)
        )
        row = (await self.session.execute(query)).one_or_none()
        return Budgets(None, None) if row is None else Budgets(row[0], row[1])

    async def lock_team(self, team_id: str) -> None:
        """Serialise budget checks of one team until this transaction ends, across replicas.

        PostgreSQL: a transaction-scoped advisory lock. Not ``SELECT ... FOR UPDATE`` on the team
        row: the job INSERT already holds a KEY SHARE lock on it (the foreign key), and two
        admissions upgrading their KEY SHARE to UPDATE would deadlock each other. SQLite: writers
        are already serialised, every transaction starts with ``BEGIN IMMEDIATE``.
        """
        if self.dialect == "postgresql":
            await self.session.execute(select(func.pg_advisory_xact_lock(advisory_key(team_id))))

    async def committed(self, team_id: str, api_key_id: str | None, month: str) -> Committed:
        mine = LedgerEntry.api_key_id == api_key_id
        key_amount = case((mine, LedgerEntry.amount_micros), else_=0)
        query = select(
            func.coalesce(func.sum(LedgerEntry.amount_micros), 0),
            func.coalesce(func.sum(key_amount), 0),
        ).where(LedgerEntry.team_id == team_id, LedgerEntry.month == month)
        team_sum, key_sum = (await self.session.execute(query)).one()
        return Committed(int(team_sum), int(key_sum) if api_key_id is not None else 0)

    async def balance(self, team_id: str, month: str, api_key_id: str | None = None) -> Balance:
        settled = case((LedgerEntry.kind == "settle", LedgerEntry.amount_micros), else_=0)
        held = case((LedgerEntry.kind != "settle", LedgerEntry.amount_micros), else_=0)
        query = select(func.coalesce(func.sum(settled), 0), func.coalesce(func.sum(held), 0)).where(
            LedgerEntry.team_id == team_id, LedgerEntry.month == month
        )
        if api_key_id is not None:
            query = query.where(LedgerEntry.api_key_id == api_key_id)
        spent, reserved = (await self.session.execute(query)).one()
        return Balance(int(spent), int(reserved))

    async def reservation(self, job_id: str) -> Reservation | None:
        query = select(LedgerEntry.amount_micros, LedgerEntry.month).where(
            LedgerEntry.job_id == job_id, LedgerEntry.kind == "reserve"
        )
        row = (await self.session.execute(query)).one_or_none()
        return None if row is None else Reservation(int(row[0]), str(row[1]))

    async def record(
        self,
        *,
        job_id: str,
        team_id: str,
        api_key_id: str | None,
        kind: str,
        amount_micros: int,
        month: str,
        once: bool = False,
    ) -> None:
        """Append one row. ``once``: a second row of this kind for the job is silently skipped.

        The skip is an ``ON CONFLICT DO NOTHING`` on the (job_id, kind) unique constraint, so it
        also holds when two transactions race, and it never aborts the caller's transaction.
        """
        values = {
            "job_id": job_id,
            "team_id": team_id,
            "api_key_id": api_key_id,
            "kind": kind,
            "amount_micros": amount_micros,
            "month": month,
            "created_at": utcnow(),
        }
        if not once:
            await self.session.execute(insert(LedgerEntry).values(values))
            return
        dialect_insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        statement = dialect_insert(LedgerEntry).values(values)
        await self.session.execute(
            statement.on_conflict_do_nothing(index_elements=["job_id", "kind"])
        )
