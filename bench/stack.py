"""The gateway under test: a fresh database, a Redis prefix and an API key per scenario.

``gateway_stack`` creates ``imagegate_bench_<random>`` on the local PostgreSQL, runs
``imagegate migrate`` and ``imagegate keys create`` against it, starts ``imagegate api`` (and a
worker when asked) pinned to the gateway's core, and on the way out stops them, drops the
database and deletes the run's Redis keys. Children get only the settings given here (no
inherited ``IMAGEGATE_*``, no ``.env``), with the simulator as the only upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bench.procs import Proc, ProcessFailed, ProcessGroup, free_port, wait_http_ready

HOST = "127.0.0.1"
REDIS_URL = f"redis://{HOST}:6379/0"
SETUP_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class GatewaySetup:
    """The gateway's core, its worker's niceness there, and extra ``IMAGEGATE_*`` settings."""

    core: int | None
    worker_nice: int
    extra_env: tuple[tuple[str, str], ...] = ()


@dataclass
class Gateway:
    """A running gateway: its URL, API key, processes and database."""

    name: str
    base_url: str
    key: str
    database: str
    env: dict[str, str]
    api: Proc
    procs: ProcessGroup
    setup: GatewaySetup
    worker: Proc | None = None
    notes: dict[str, object] = field(default_factory=dict)

    def start_worker(self, nice: int | None = None) -> Proc:
        """Start one ``imagegate worker`` on the gateway's core (default niceness: the setup's)."""
        if self.worker is None or not self.worker.alive():
            self.worker = self.procs.start(
                f"{self.name}-gateway-worker",
                [imagegate_bin(), "worker"],
                self.env,
                core=self.setup.core,
                nice=self.setup.worker_nice if nice is None else nice,
                cwd=Path(self.env["IMAGEGATE_DATA_DIR"]),
            )
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.procs.stop(self.worker)
            self.worker = None

    def cpu_seconds(self) -> dict[str, float]:
        found = {"api": self.api.cpu_seconds()}
        if self.worker is not None:
            found["worker"] = self.worker.cpu_seconds()
        return found


def imagegate_bin() -> str:
    """The ``imagegate`` script of the running interpreter's environment."""
    local = Path(sys.executable).parent / "imagegate"
    if local.exists():
        return str(local)
    found = shutil.which("imagegate")
    if found is None:
        raise ProcessFailed("the imagegate command is not installed (run `make` first)")
    return found


def gateway_env(
    database: str, port: int, data_dir: Path, prefix: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The parent's environment minus any ``IMAGEGATE_*``, plus this run's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env.update(
        IMAGEGATE_DATABASE_URL=f"postgresql+asyncpg://postgres@{HOST}:5432/{database}",
        IMAGEGATE_REDIS_URL=REDIS_URL,
        IMAGEGATE_REDIS_PREFIX=prefix,
        IMAGEGATE_SECRET_KEY=secrets.token_urlsafe(48),
        IMAGEGATE_DATA_DIR=str(data_dir),
        IMAGEGATE_HOST=HOST,
        IMAGEGATE_PORT=str(port),
        IMAGEGATE_LOG_LEVEL="warning",
        IMAGEGATE_SIMULATOR__ENABLED="true",
    )
    env.update(extra or {})
    return env


def pg_dsn(database: str = "postgres") -> str:
    return f"postgresql://postgres@{HOST}:5432/{database}"


async def pg_fetch(sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
    """Run one statement on the local PostgreSQL; its rows as tuples."""
    connection = await asyncpg.connect(pg_dsn(database), timeout=10)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def _admin(sql: str) -> None:
    await pg_fetch(sql)


async def create_database() -> str:
    name = f"imagegate_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    return name


async def drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def delete_redis_keys(prefix: str) -> int:
    """Delete every key under this run's prefix; returns how many."""
    redis = Redis.from_url(REDIS_URL, socket_timeout=5)
    deleted = 0
    try:
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            deleted += int(await redis.delete(key))
    finally:
        await redis.aclose()
    return deleted


async def run_cli(args: list[str], env: Mapping[str, str], cwd: Path) -> str:
    """Run a short ``imagegate`` command; its stdout, or ProcessFailed with its output."""
    process = await asyncio.create_subprocess_exec(
        imagegate_bin(),
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), SETUP_TIMEOUT_S)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        detail = (out + err).decode(errors="replace")[-2000:]
        raise ProcessFailed(f"imagegate {' '.join(args)} failed ({process.returncode}):\n{detail}")
    return out.decode()


async def _create_key(env: Mapping[str, str], cwd: Path) -> str:
    scopes = ["--scope", "images:write", "--scope", "images:read"]
    out = await run_cli(["keys", "create", "--team", "bench", *scopes], env, cwd)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise ProcessFailed("imagegate keys create printed no key")
    return lines[-1]


@contextlib.asynccontextmanager
async def gateway_stack(
    name: str, procs: ProcessGroup, work_dir: Path, setup: GatewaySetup
) -> AsyncIterator[Gateway]:
    """A migrated database, a key and a ready ``imagegate api``; all removed on exit."""
    database = await create_database()
    prefix = f"imagegate_bench_{secrets.token_hex(4)}:"
    data_dir = work_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = gateway_env(database, port, data_dir, prefix, dict(setup.extra_env))
    api: Proc | None = None
    gateway: Gateway | None = None
    try:
        await run_cli(["migrate"], env, data_dir)
        key = await _create_key(env, data_dir)
        api = procs.start(
            f"{name}-gateway-api",
            [imagegate_bin(), "api", "--host", HOST, "--port", str(port)],
            env,
            core=setup.core,
            cwd=data_dir,
        )
        base_url = f"http://{HOST}:{port}"
        await wait_http_ready(api, base_url + "/readyz")
        gateway = Gateway(name, base_url, key, database, env, api, procs, setup)
        yield gateway
    finally:
        if gateway is not None:
            gateway.stop_worker()
        if api is not None:
            procs.stop(api)
        await drop_database(database)
        await delete_redis_keys(prefix)
