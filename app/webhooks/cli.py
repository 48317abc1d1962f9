"""``imagegate webhooks secret --team NAME [--rotate]``: a team's client-webhook secret.

Receivers verify imagegate's webhooks with this ``whsec_...`` secret (any Standard Webhooks
library). It is created on first use, so asking for it before the team's first webhook is how
an operator hands it out ahead of time. Only the secret is printed on stdout.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from app.config import ConfigError, Settings

webhooks_cli = typer.Typer(help="Client webhooks: the signing secret.", no_args_is_help=True)
err = Console(stderr=True)


@webhooks_cli.command("secret")
def secret(
    team: Annotated[str, typer.Option(help="Team name.")],
    rotate: Annotated[bool, typer.Option(help="Replace the secret with a new one.")] = False,
) -> None:
    """Print the team's webhook secret (created if the team has none yet)."""
    settings = Settings()
    try:
        settings.signing_key  # noqa: B018 - fail fast on a missing secret
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    value = asyncio.run(_secret(settings, team, rotate))
    if value is None:
        err.print(f"[red]no team named {team!r}[/red]")
        raise typer.Exit(2)
    if rotate:
        err.print("rotated: deliveries from now on are signed with the new secret")
    typer.echo(value)


async def _secret(settings: Settings, team: str, rotate: bool) -> str | None:
    from app.runtime import open_runtime
    from app.setup import migrate
    from app.webhooks.repository import DeliveryRepository
    from app.webhooks.secrets import rotate_team_webhook_secret, team_webhook_secret

    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(migrate, settings.resolved_database_url)
    async with open_runtime(settings) as runtime, runtime.sessions() as session:
        team_id = await DeliveryRepository(session).team_id_by_name(team)
        if team_id is None:
            return None
        if rotate:
            value = await rotate_team_webhook_secret(session, team_id)
        else:
            value = await team_webhook_secret(session, team_id)
        await session.commit()
    return value
