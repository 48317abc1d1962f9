"""Budget tests run their replicas on databases of their own.

The shared ``gateway`` fixture's worker would otherwise claim these tests' jobs from the shared
database and finish them with its own simulator settings (another price, no failures).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.setup import migrate
from tests.conftest import Backend, empty_pg_database


@pytest.fixture(scope="module")
def isolated_pg() -> Iterator[str]:
    with empty_pg_database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def own_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Backend:
    prefix = f"igtest:{uuid.uuid4().hex[:8]}:"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('budgets') / 'imagegate.db'}"
        migrate(url)
        return Backend("sqlite", url, None, prefix)
    redis = request.getfixturevalue("redis_url")
    return Backend("postgres", request.getfixturevalue("isolated_pg"), redis, prefix)
