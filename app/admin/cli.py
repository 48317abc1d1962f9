"""``imagegate keys ...`` and ``imagegate teams ...``: the admin API's operations from a shell.

They talk to the database directly (no running server needed) through the same service layer as
the admin API, so the same rules apply. A new or rolled key is the only thing printed on stdout
(scripts can capture it); everything else goes to stderr or into tables.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import ConfigError, Settings
from app.errors import ApiError

T = TypeVar("T")
keys_cli = typer.Typer(help="Create, list, revoke and roll API keys.", no_args_is_help=True)
teams_cli = typer.Typer(help="Create, list and update teams.", no_args_is_help=True)
err = Console(stderr=True)

Budget = Annotated[
    str | None, typer.Option("--budget-usd", help='Monthly budget in USD, e.g. "250.00".')
]


def _settings() -> Settings:
    settings = Settings()
    try:
        settings.signing_key  # noqa: B018 - fail fast on a missing secret
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    return settings


@contextlib.asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator[tuple[Any, AsyncSession]]:
    from app.runtime import open_runtime
    from app.setup import migrate

    if settings.is_sqlite:  # the embedded default creates its schema on first use
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(migrate, settings.resolved_database_url)
    async with open_runtime(settings) as runtime, runtime.sessions() as session:
        yield runtime, session


def _run(action: Callable[[Any, AsyncSession], Awaitable[T]]) -> T:
    """Run ``action(runtime, session)`` and commit; input problems exit 2 with the reason."""

    async def main() -> T:
        async with _session(_settings()) as (runtime, session):
            result = await action(runtime, session)
            await session.commit()
            return result

    try:
        return asyncio.run(main())
    except ApiError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from None
    except ValidationError as exc:
        for problem in exc.errors():
            field = ".".join(str(part) for part in problem["loc"])
            message = str(problem["msg"]).removeprefix("Value error, ")
            err.print(f"[red]{field}: {message}[/red]")
        raise typer.Exit(2) from None


def _fields(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


# ---- keys -----------------------------------------------------------------------------------


@keys_cli.command("create")
def keys_create(
    team: Annotated[str, typer.Option(help="Team name (created if new).")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    scope: Annotated[
        list[str] | None, typer.Option(help="Scope (repeatable); default images + usage.")
    ] = None,
    expires_at: Annotated[
        datetime | None, typer.Option(help="Expiry (UTC), e.g. 2027-01-01T00:00:00.")
    ] = None,
    rate_limit_per_minute: Annotated[int | None, typer.Option()] = None,
    rate_limit_burst: Annotated[int | None, typer.Option()] = None,
    budget_usd: Budget = None,
) -> None:
    """Create an API key and print it once (on stdout)."""
    from app.admin import service
    from app.admin.schemas import KeyCreate

    async def action(runtime: Any, session: AsyncSession) -> tuple[str, str, list[str]]:
        found = await service.find_team_or_none(session, team)
        if found is None:
            found = await service.create_team(session, _team_create(team))
        body = KeyCreate(
            team_id=found.id,
            **_fields(
                name=name,
                scopes=scope,
                expires_at=_utc(expires_at),
                rate_limit_per_minute=rate_limit_per_minute,
                rate_limit_burst=rate_limit_burst,
                monthly_budget_usd=budget_usd,
            ),
        )
        row, _, key = await service.create_key(session, runtime.hasher, body)
        return key, found.name, list(row.scopes)

    key, team_name, scopes = _run(action)
    err.print(f"key for team [bold]{team_name}[/bold] ({', '.join(scopes)}); shown once:")
    typer.echo(key)


def _team_create(name: str) -> Any:
    from app.admin.schemas import TeamCreate

    return TeamCreate(name=name)


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@keys_cli.command("list")
def keys_list(
    team: Annotated[str | None, typer.Option(help="Only this team's (name or id).")] = None,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List keys (prefixes only; secrets are never stored)."""
    from app.admin import service

    async def action(runtime: Any, session: AsyncSession) -> list[Any]:
        team_id = (await service.find_team(session, team)).id if team else None
        rows = await service.list_keys(
            session, team_id=team_id, include_revoked=include_revoked, after_id=None, limit=10_000
        )
        names = await service.team_names(session, [r.team_id for r in rows])
        return [service.key_view(r, names.get(r.team_id)) for r in rows]

    keys = _run(action)
    if as_json:
        for key in keys:
            typer.echo(key.model_dump_json())
        return
    table = Table("id", "team", "name", "prefix", "scopes", "status", "rate/min", "last used")
    for key in keys:
        table.add_row(
            key.id,
            key.team_name or key.team_id,
            key.name,
            key.prefix + "…",
            " ".join(key.scopes),
            key.status,
            "" if key.rate_limit_per_minute is None else str(key.rate_limit_per_minute),
            key.last_used_at or "",
        )
    Console().print(table)


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke a key for good (other API processes notice within the key cache TTL)."""
    from app.admin import service

    async def action(runtime: Any, session: AsyncSession) -> None:
        await service.revoke_key(session, key_id)

    _run(action)
    err.print(f"revoked {key_id}")


@keys_cli.command("roll")
def keys_roll(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    grace_seconds: Annotated[
        int | None,
        typer.Option(min=0, max=30 * 86_400, help="How long the old secret keeps working."),
    ] = None,
) -> None:
    """Give a key a new secret and print it once; the old one works until the grace ends."""
    from app.admin import service

    async def action(runtime: Any, session: AsyncSession) -> str:
        grace = runtime.settings.key_roll_grace_s if grace_seconds is None else grace_seconds
        _, key = await service.roll_key(session, runtime.hasher, key_id, grace)
        return key

    key = _run(action)
    err.print(f"new secret for {key_id}; shown once:")
    typer.echo(key)


# ---- teams ----------------------------------------------------------------------------------


@teams_cli.command("create")
def teams_create(name: Annotated[str, typer.Argument()], budget_usd: Budget = None) -> None:
    """Create a team."""
    from app.admin import service
    from app.admin.schemas import TeamCreate

    async def action(runtime: Any, session: AsyncSession) -> str:
        team = await service.create_team(
            session, TeamCreate(name=name, monthly_budget_usd=budget_usd)
        )
        return team.id

    typer.echo(_run(action))


@teams_cli.command("list")
def teams_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List teams with their monthly budgets."""
    from app.admin import service

    async def action(runtime: Any, session: AsyncSession) -> list[Any]:
        teams = await service.list_teams(session, after_id=None, limit=10_000)
        return [service.team_view(t) for t in teams]

    teams = _run(action)
    if as_json:
        for team in teams:
            typer.echo(team.model_dump_json())
        return
    table = Table("id", "name", "monthly budget (USD)", "created")
    for team in teams:
        table.add_row(team.id, team.name, team.monthly_budget_usd or "", team.created_at)
    Console().print(table)


@teams_cli.command("update")
def teams_update(
    team: Annotated[str, typer.Argument(help="The team's name or id.")],
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    budget_usd: Budget = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="Remove the budget.")] = False,
) -> None:
    """Rename a team or change its monthly budget."""
    from app.admin import service
    from app.admin.schemas import TeamUpdate

    if no_budget and budget_usd is not None:
        err.print("[red]give either --budget-usd or --no-budget[/red]")
        raise typer.Exit(2)

    async def action(runtime: Any, session: AsyncSession) -> Any:
        found = await service.find_team(session, team)
        changes: dict[str, Any] = _fields(name=name, monthly_budget_usd=budget_usd)
        if no_budget:
            changes["monthly_budget_usd"] = None
        updated = await service.update_team(session, found.id, TeamUpdate(**changes))
        return service.team_view(updated)

    view = _run(action)
    err.print(f"{view.name}: monthly budget {view.monthly_budget_usd or 'none'}")
