"""Fixtures for access-control tests: admin keys and a SQLite-only backend."""

from __future__ import annotations

import uuid

import pytest

from app.auth.service import KeyTerms, issue_key
from app.setup import ADMIN_SCOPES, migrate
from tests.conftest import Backend, Gateway


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
