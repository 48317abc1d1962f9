"""Shared fixtures: real SQLite and PostgreSQL + Redis backends, and the app driven in-process.

Every test that takes ``backend`` (directly or through ``gateway``) runs twice: on the embedded
SQLite default and on PostgreSQL + Redis. PostgreSQL gets a fresh database per test session,
migrated once with Alembic; Redis keys carry a per-session prefix. Without the services a local
run skips those cases; with ``CI=true`` it fails loudly instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import uvicorn

from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from app.setup import migrate
from tests.helpers import Client
from tests.procs import RedisServer, free_port

PG_ADMIN_DSN = os.environ.get("IMAGEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("IMAGEGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SECRET = "test-secret-" + "x" * 40


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is unreachable ({type(exc).__name__}: {exc})"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it, refusing to skip", pytrace=False)
    pytest.skip(message)


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class _PgCopies:
    """Copies of a migrated template database, reused: a copy given back is emptied (every table
    truncated, identities restarted) and handed to the next test, since ``CREATE DATABASE`` and
    ``DROP DATABASE`` cost about half a second each here. A copy that cannot be emptied (a lock
    held by a leaked connection) is dropped instead. All are dropped when the session ends."""

    def __init__(self) -> None:
        self.free: dict[str, list[str]] = {}
        self.made: list[str] = []

    async def take(self, template: str) -> str:
        free = self.free.setdefault(template, [])
        if free:
            return free.pop()
        name = f"imagegate_test_{uuid.uuid4().hex[:10]}"
        await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.made.append(name)
        return name

    async def give_back(self, template: str, name: str) -> None:
        try:
            await _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            conn = await asyncpg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}", timeout=5)
            try:
                await conn.execute("SET lock_timeout = '2s'")
                tables = await conn.fetch(
                    "SELECT quote_ident(tablename) AS name FROM pg_tables"
                    " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                )
                listed = ", ".join(row["name"] for row in tables)
                await conn.execute(f"TRUNCATE {listed} RESTART IDENTITY CASCADE")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.made.remove(name)
            return
        self.free.setdefault(template, []).append(name)

    async def drop_all(self) -> None:
        for name in self.made:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()
        self.free.clear()


_PG_COPIES = _PgCopies()


@contextlib.contextmanager
def empty_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (no schema), dropped afterwards."""
    name = f"imagegate_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable("PostgreSQL", exc)
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    with empty_pg_database() as url:
        migrate(url)
        yield url


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """An empty PostgreSQL database for one test (migrations, multi-process scenarios)."""
    with empty_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str | None
    redis_url: str | None
    redis_prefix: str
    template: str | None = None  # a migrated database (file or PG database) to copy from

    @contextlib.asynccontextmanager
    async def isolated(self, tmp: Path) -> AsyncIterator[Backend]:
        """This backend with a database of its own, copied from the migrated template, so no
        other gateway's worker can claim its jobs."""
        prefix = f"igtest:{uuid.uuid4().hex[:8]}:"
        if self.template is None:
            yield self
        elif self.name == "sqlite":
            path = tmp / f"isolated-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.template, path)
            yield replace(self, database_url=f"sqlite+aiosqlite:///{path}", redis_prefix=prefix)
        else:
            name = await _PG_COPIES.take(self.template)
            base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            try:
                yield replace(self, database_url=f"{base}/{name}", redis_prefix=prefix)
            finally:
                await _PG_COPIES.give_back(self.template, name)

    def settings(self, tmp: Path, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp,
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_prefix": self.redis_prefix,
            "secret_key": SECRET,
            "log_level": "warning",
            "worker_idle_interval_s": 0.05,
            "db_pool_size": 4,
            "simulator": {"latency_s": 0.05, "latency_jitter": 0.0},
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    prefix = f"igtest:{uuid.uuid4().hex[:8]}:"
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("sqlite")
        template = folder / "template.db"
        migrate(f"sqlite+aiosqlite:///{template}")
        shutil.copyfile(template, folder / "imagegate.db")
        url = f"sqlite+aiosqlite:///{folder / 'imagegate.db'}"
        return Backend("sqlite", url, None, prefix, str(template))
    return Backend(
        "postgres",
        request.getfixturevalue("pg_url"),
        request.getfixturevalue("redis_url"),
        prefix,
        request.getfixturevalue("pg_template"),
    )


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database nobody connects to, copied by ``CREATE DATABASE ... TEMPLATE``."""
    with empty_pg_database() as url:
        migrate(url)
        try:
            yield url.rsplit("/", 1)[1]
        finally:
            asyncio.run(_PG_COPIES.drop_all())


@dataclass
class Gateway:
    """A running app (API + worker) and a client for it."""

    runtime: Runtime
    http: httpx.AsyncClient
    backend: Backend

    def client(self, key: str) -> Client:
        return Client(self.http, key)


def _no_server_errors(response: httpx.Response) -> None:
    # No request in this suite may produce a 500: client input never does.
    assert response.status_code < 500 or response.status_code in (502, 503), (
        f"{response.request.method} {response.request.url} answered {response.status_code}"
    )


async def start_gateway(
    backend: Backend,
    tmp: Path,
    *,
    run_worker: bool = True,
    isolate: bool = True,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """A running app on its own database (``isolate``), so workers never share jobs."""
    if isolate:
        async with backend.isolated(tmp) as own:
            inner = start_gateway(own, tmp, run_worker=run_worker, isolate=False, **overrides)
            async with contextlib.aclosing(inner):
                async for gateway in inner:
                    yield gateway
        return
    settings = backend.settings(tmp, **overrides)
    app = create_app(settings, run_worker=run_worker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://gateway.test",
            event_hooks={"response": [_async(_no_server_errors)]},
        ) as http:
            yield Gateway(app.state.runtime, http, backend)


async def start_served_gateway(
    backend: Backend, tmp: Path, **overrides: Any
) -> AsyncIterator[Gateway]:
    """A gateway also served over real HTTP on loopback, so upstream emulators can call back."""
    port = free_port()
    overrides.setdefault("public_base_url", f"http://127.0.0.1:{port}")
    inner = start_gateway(backend, tmp, **overrides)
    async with contextlib.aclosing(inner):
        async for gateway in inner:
            app = gateway.http._transport.app  # type: ignore[attr-defined]
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
            )
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            try:
                yield gateway
            finally:
                server.should_exit = True
                await task


def _async(check: Any) -> Any:
    async def hook(response: httpx.Response) -> None:
        check(response)

    return hook


@pytest.fixture(scope="session")
async def gateway(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """The shared gateway for a backend: simulator at 50 ms, worker running."""
    tmp = tmp_path_factory.mktemp(f"gw-{backend.name}")
    async for gw in start_gateway(backend, tmp, isolate=False):
        yield gw


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own on a free port, stopped by its own pid (never the
    shared one), so the test may stop and start it mid-run."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
