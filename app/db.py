"""Database engine and session factory for SQLite (embedded) and PostgreSQL (distributed).

Also the two column types and one SQL expression that let one set of models and queries serve
both engines: UTC-aware timestamps, JSON (JSONB on PostgreSQL), and ``db_now(offset)``, the
database's own clock, which every lease and schedule uses so that workers on different hosts
agree on what "expired" and "due" mean.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator

JsonType = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text from db_now() expressions
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class db_now(FunctionElement[datetime]):
    """The database clock plus ``offset`` seconds (may be negative)."""

    type = UtcDateTime()
    inherit_cache = True
    # The offset is rendered into the SQL text, so it must be part of the statement cache key;
    # without it every db_now(x) in one statement shape reused the first offset compiled.
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("offset", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = float(offset)
        super().__init__()


@compiles(db_now, "postgresql")
def _pg_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    if element.offset == 0:
        return "clock_timestamp()"
    return f"(clock_timestamp() + interval '{element.offset:.6f} seconds')"


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # Same text layout SQLAlchemy uses for SQLite datetimes, so comparisons are lexicographic.
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', '{element.offset:+.3f} seconds')"


def create_engine(
    url: str, *, pool_size: int = 16, statement_timeout_s: float = 10.0
) -> AsyncEngine:
    """An engine whose PostgreSQL pool holds at most ``pool_size`` connections and keeps them.

    No overflow on purpose: an overflow connection is closed as soon as it is returned while
    the pool is full, so under steady concurrency above the pool size every few requests paid
    for a new connection (TCP, startup, type introspection, statements prepared again). A
    request beyond ``pool_size`` concurrent transactions waits for a connection instead.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _tune_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=max(30.0, statement_timeout_s),  # queue behind busy steps, do not fail
        pool_recycle=1800,
        connect_args={
            "timeout": statement_timeout_s,
            "command_timeout": statement_timeout_s,
            "server_settings": {"application_name": "imagegate"},
        },
    )


def _tune_sqlite(engine: AsyncEngine) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so writers queue instead of deadlocking."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
