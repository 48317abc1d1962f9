"""Fixtures for metrics and dashboard scenarios: a job store of their own.

The ``backend`` fixture's database is shared by every gateway of the session, and the shared
``gateway`` fixture's worker would claim (and fail) jobs routed to providers only a scenario's
own gateway has. A scenario that needs all of a store's jobs to be its own takes
``fresh_backend``: a new SQLite file, or a new PostgreSQL database (with the session's Redis).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.setup import migrate
from tests.conftest import Backend, empty_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    prefix = f"igfresh:{uuid.uuid4().hex[:8]}:"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        migrate(url)
        yield Backend("sqlite", url, None, prefix)
        return
    redis_url = request.getfixturevalue("redis_url")
    with empty_pg_database() as url:
        migrate(url)
        yield Backend("postgres", url, redis_url, prefix)
