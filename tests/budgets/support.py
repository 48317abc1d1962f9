"""Helpers for budget and usage tests: key ids, budgets set in the database, ledger figures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from app.kit.money import usd_to_micros
from app.kit.timeutil import utcnow
from app.models import ApiKey, Job, LedgerEntry, Team
from app.runtime import Runtime
from tests.conftest import Backend, Gateway, start_gateway
from tests.helpers import TERMINAL

SIMULATOR = {"latency_s": 0.05, "latency_jitter": 0.0}


def priced(usd: str, **knobs: Any) -> dict[str, Any]:
    """Simulator settings with a price per image (and any other knob)."""
    return {**SIMULATOR, "price_usd": usd, **knobs}


@contextlib.asynccontextmanager
async def replica(backend: Backend, tmp: Path, **overrides: Any) -> AsyncIterator[Gateway]:
    """One more gateway (API + worker) on the backend's own database, shared with the others.

    ``isolate=False``: replicas must share one job store (the backends of these tests are
    already databases of their own, see ``conftest.py``).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    running = start_gateway(backend, tmp, isolate=False, **overrides)
    gateway = await anext(running)
    try:
        yield gateway
    finally:
        # The routing statistics refresh runs as a background task that the runtime does not
        # await when it closes: one still running would hand its connection back to a pool
        # already disposed, and a later test's garbage collection would report it unclosed.
        stragglers = [t for t in asyncio.all_tasks() if t.get_name() == "routing-stats"]
        await asyncio.gather(*stragglers, return_exceptions=True)
        # Resume the generator rather than aclose() it: start_gateway then leaves the app's
        # lifespan the ordinary way (worker drained, runtime closed). A GeneratorExit thrown in
        # instead leaves the worker and its database connections running behind the test.
        with contextlib.suppress(StopAsyncIteration):
            await anext(running)


@dataclass(frozen=True)
class KeyIds:
    key_id: str
    team_id: str


async def ids_of(runtime: Runtime, key: str) -> KeyIds:
    async with runtime.sessions() as session:
        row = (
            await session.execute(
                select(ApiKey.id, ApiKey.team_id).where(ApiKey.secret_hmac == runtime.hasher(key))
            )
        ).one()
    return KeyIds(row[0], row[1])


async def set_team_budget(runtime: Runtime, team_id: str, usd: str | None) -> None:
    micros = None if usd is None else usd_to_micros(usd)
    async with runtime.sessions() as session:
        await session.execute(
            update(Team).where(Team.id == team_id).values(monthly_budget_micros=micros)
        )
        await session.commit()


async def set_key_budget(runtime: Runtime, key_id: str, usd: str | None) -> None:
    micros = None if usd is None else usd_to_micros(usd)
    async with runtime.sessions() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(monthly_budget_micros=micros)
        )
        await session.commit()


@dataclass(frozen=True)
class LedgerFigures:
    """A team's month, straight from SUMs over its ledger rows."""

    by_kind: dict[str, int]
    rows_by_kind: dict[str, int]

    @property
    def spent(self) -> int:
        return self.by_kind.get("settle", 0)

    @property
    def held(self) -> int:
        return self.by_kind.get("reserve", 0) + self.by_kind.get("refund", 0)

    @property
    def committed(self) -> int:
        return sum(self.by_kind.values())


async def ledger_figures(runtime: Runtime, team_id: str, month: str | None = None) -> LedgerFigures:
    month = month or utcnow().strftime("%Y-%m")
    query = (
        select(LedgerEntry.kind, func.sum(LedgerEntry.amount_micros), func.count())
        .where(LedgerEntry.team_id == team_id, LedgerEntry.month == month)
        .group_by(LedgerEntry.kind)
    )
    async with runtime.sessions() as session:
        rows = (await session.execute(query)).all()
    return LedgerFigures(
        {str(kind): int(total) for kind, total, _ in rows},
        {str(kind): int(count) for kind, _, count in rows},
    )


async def wait_terminal(runtime: Runtime, job_ids: list[str], timeout: float = 60.0) -> list[str]:
    """Statuses read from the job store itself.

    Replicas on SQLite each keep an in-process cache, so a GET through one replica may show a job
    that the other replica's worker finished as still running; the store is the truth.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with runtime.sessions() as session:
            rows = dict(
                (await session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids)))).all()
            )
        statuses = [str(rows[job_id]) for job_id in job_ids]
        if all(status in TERMINAL for status in statuses):
            return statuses
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"jobs not terminal after {timeout}s: {statuses}")
        await asyncio.sleep(0.05)
