"""Migration parity: a migrated database equals the models, and downgrade/upgrade round-trips."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from app.db import create_engine
from app.models import Base
from app.setup import alembic_config
from tests.conftest import Backend


def _diff(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(url)
        async with engine.connect() as connection:

            def compare(sync: Connection) -> list[Any]:
                context = MigrationContext.configure(sync, opts={"compare_type": True})
                return list(compare_metadata(context, Base.metadata))

            diff = await connection.run_sync(compare)
        await engine.dispose()
        return diff

    return asyncio.run(run())


def _tables(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(url)
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        await engine.dispose()
        return names - {"alembic_version"}

    return asyncio.run(run())


async def test_upgrade_head_matches_models(backend: Backend, tmp_path: Path) -> None:
    # The session databases of both backends were migrated from empty by `alembic upgrade`; a
    # copy of one (no gateway writes to it) is at head: upgrading again changes nothing.
    async with backend.isolated(tmp_path) as own:
        url = own.database_url
        assert url is not None
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        assert await asyncio.to_thread(_diff, url) == []
        assert await asyncio.to_thread(_tables, url) == set(Base.metadata.tables)


def test_downgrade_then_upgrade_round_trips(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert _tables(url) == set()
    command.upgrade(config, "head")
    assert _diff(url) == []


def test_downgrade_then_upgrade_round_trips_on_postgres(fresh_pg_url: str) -> None:
    config = alembic_config(fresh_pg_url)
    command.upgrade(config, "head")
    assert _diff(fresh_pg_url) == []
    command.downgrade(config, "base")
    assert _tables(fresh_pg_url) == set()
    command.upgrade(config, "head")
    assert _diff(fresh_pg_url) == []
    assert _tables(fresh_pg_url) == set(Base.metadata.tables)
