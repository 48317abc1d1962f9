"""Fixtures for worker tests: an isolated, migrated job store per test (no gateway worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import create_engine, create_sessionmaker, db_now
from app.kit.ids import new_job_id
from app.kit.timeutil import utcnow
from app.models import Job, Team
from app.setup import migrate
from tests.conftest import empty_pg_database


@dataclass
class Store:
    kind: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
        migrate(url)
        yield url
        return
    with empty_pg_database() as url:
        migrate(url)
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    engine = create_engine(store_url, pool_size=12)
    yield Store(
        "sqlite" if store_url.startswith("sqlite") else "postgres",
        engine,
        create_sessionmaker(engine),
    )
    await engine.dispose()


async def add_due_jobs(store: Store, count: int, *, stage: str = "queued") -> list[str]:
    """Insert ``count`` jobs due now, in one statement per 1,000."""
    now = utcnow()
    async with store.sessions() as session:
        session.add(Team(id="team_t", name="t"))
        await session.flush()
        ids = [new_job_id() for _ in range(count)]
        for start in range(0, count, 1000):
            await session.execute(
                insert(Job),
                [
                    {
                        "id": job_id,
                        "team_id": "team_t",
                        "model": "black-forest-labs/flux-2-dev",
                        "input": {},
                        "request_hash": "0" * 64,
                        "status": "pending",
                        "stage": stage,
                        "route_plan": [],
                        "created_at": now,
                        "updated_at": now,
                        "next_action_at": now,
                    }
                    for job_id in ids[start : start + 1000]
                ],
            )
        await session.commit()
    return ids


__all__ = ["Store", "add_due_jobs", "db_now"]
