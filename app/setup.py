"""First-start chores: schema migrations (embedded mode) and the first admin key."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config

from app.auth.repository import AuthRepository
from app.auth.service import issue_key
from app.runtime import Runtime

log = structlog.get_logger("imagegate")
ROOT = Path(__file__).resolve().parent.parent
ADMIN_SCOPES = ("images:write", "images:read", "usage:read", "admin")


def alembic_config(database_url: str) -> Config:
    """Alembic's config, found next to the package or in the working directory (the image)."""
    for base in (Path.cwd(), ROOT):
        ini = base / "alembic.ini"
        if ini.is_file():
            config = Config(str(ini))
            config.attributes["database_url"] = database_url
            config.attributes["configure_logging"] = False
            return config
    raise FileNotFoundError("alembic.ini not found in the working directory or the source tree")


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


async def bootstrap(runtime: Runtime) -> None:
    settings = runtime.settings
    if settings.is_sqlite:
        # The embedded default creates its schema itself; distributed setups run `migrate` once.
        await asyncio.to_thread(migrate, settings.resolved_database_url)
    if settings.is_embedded:
        await ensure_admin_key(runtime)


async def ensure_admin_key(runtime: Runtime) -> str | None:
    """On a first start with no keys at all, create an admin key, print it and keep it (0600)."""
    async with runtime.sessions() as session:
        if await AuthRepository(session).count_keys():
            return None
        issued = await issue_key(
            session, runtime.hasher, team_name="admin", name="first admin key", scopes=ADMIN_SCOPES
        )
        await session.commit()
    path = runtime.settings.admin_key_file or runtime.settings.data_dir / "admin-key.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.key + "\n")
    print(
        f"\n  imagegate: created an admin API key (shown once, also saved to {path}):\n"
        f"  {issued.key}\n",
        file=sys.stderr,
        flush=True,
    )
    return issued.key
