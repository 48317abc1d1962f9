"""Fixtures for the delivery guarantees: an isolated job store, a webhook receiver and a gateway
allowed to reach it.

These tests run their gateways on a job store of their own (``isolated``): the session's shared
gateway keeps a worker running on the session database, and that worker would otherwise take
these tests' jobs and webhooks with its own settings (simulator latency, egress policy). Each
test runs its own gateway(s) and leaves no job pending, so one such store serves them all.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.setup import migrate
from app.webhooks.egress import Egress
from tests.conftest import (
    Backend,
    Gateway,
    empty_pg_database,
    start_gateway,
    start_served_gateway,
)
from tests.delivery.receiver import Receiver


class FakeResolver:
    """Host names answered from a table (no live DNS); records each lookup."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise OSError(f"fake NXDOMAIN for {host}")
        return list(self.table[host])


def hook_settings(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    """Settings that let webhooks reach the loopback receiver, with a fast retry schedule."""
    values: dict[str, Any] = {
        "allow_http_webhooks": True,
        "egress_allow_networks": ["127.0.0.1/32"],
        "egress_allowed_ports": [80, 443, receiver.port],
        "webhook_retry_schedule_s": [0.05] * 7,
        "webhook_retry_jitter": 0.0,
        "webhook_timeout_s": 2.0,
        "public_base_url": "http://gateway.test",
    }
    values.update(extra)
    return values


@contextlib.asynccontextmanager
async def running(
    backend: Backend, tmp: Path, *, served: bool = False, **overrides: Any
) -> AsyncIterator[Gateway]:
    """A gateway for the ``async with`` block, stopped normally even when the block fails.

    It runs on ``backend`` itself (already a store of its own), so two gateways started on the
    same backend share one job store, as two API processes do."""
    start = start_served_gateway if served else start_gateway
    gateways = start(backend, tmp, isolate=False, **overrides)
    gateway = await anext(gateways)
    try:
        yield gateway
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await anext(gateways)


def use_resolver(gateway: Gateway, resolver: FakeResolver) -> Egress:
    """Swap the gateway's egress clients for ones using ``resolver``; returns the old ones."""
    old = gateway.runtime.egress
    gateway.runtime.egress = Egress.from_settings(gateway.runtime.settings, resolver)
    return old


@pytest.fixture(scope="session")
def isolated(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """``backend`` with a freshly migrated database and a Redis prefix of the delivery tests'."""
    prefix = f"igdelivery:{uuid.uuid4().hex[:8]}:"
    if backend.database_url is None or backend.database_url.startswith("sqlite"):
        path = tmp_path_factory.mktemp("isolated") / "imagegate.db"
        url = f"sqlite+aiosqlite:///{path}"
        migrate(url)
        yield replace(backend, database_url=url, redis_prefix=prefix)
        return
    with empty_pg_database() as url:
        migrate(url)
        yield replace(backend, database_url=url, redis_prefix=prefix)


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def hooks(
    isolated: Backend, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """A gateway (API + worker, 50 ms simulator) whose webhooks reach ``receiver``."""
    tmp = tmp_path_factory.mktemp(f"hooks-{isolated.name}")
    async with running(isolated, tmp, **hook_settings(receiver)) as gateway:
        yield gateway
