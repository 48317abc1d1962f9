"""Fixtures for access-control tests: admin keys, a SQLite-only backend, a private Redis server.

The private Redis is a ``redis-server`` this suite starts on a free port and stops by its own pid
(never the shared one on 6379), so a test may kill it mid-run.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.auth.service import KeyTerms, issue_key
from app.setup import ADMIN_SCOPES, migrate
from tests.conftest import Backend, Gateway
from tests.procs import free_port


async def admin_headers(gateway: Gateway) -> dict[str, str]:
    """An admin key exempt from rate limits (``rate_limit_per_minute=0``)."""
    terms = KeyTerms(name="test admin", scopes=ADMIN_SCOPES, rate_limit_per_minute=0)
    async with gateway.runtime.sessions() as session:
        issued = await issue_key(
            session, gateway.runtime.hasher, team_name=f"admins-{uuid.uuid4().hex[:6]}", terms=terms
        )
        await session.commit()
    return {"Authorization": f"Bearer {issued.key}"}


@pytest.fixture(scope="session")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """The embedded backend alone, for behaviour that does not depend on the job store."""
    path = tmp_path_factory.mktemp("auth-sqlite") / "imagegate.db"
    url = f"sqlite+aiosqlite:///{path}"
    migrate(url)
    return Backend("sqlite", url, None, f"igtest:{uuid.uuid4().hex[:8]}:")


class RedisServer:
    """A private ``redis-server`` on a fixed free port that can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed", pytrace=False)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
