"""``imagegate teams create|list|update`` and ``imagegate keys create|list|roll|revoke`` on the
embedded default, checked against a gateway serving the same database."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import SECRET, Backend, start_gateway
from tests.helpers import body


class Shell:
    def __init__(self, data_dir: Path) -> None:
        self.runner = CliRunner()
        self.env = {
            "IMAGEGATE_DATA_DIR": str(data_dir),
            "IMAGEGATE_SECRET_KEY": SECRET,
            "IMAGEGATE_DATABASE_URL": "",
            "IMAGEGATE_REDIS_URL": "",
        }

    async def __call__(self, *args: str, code: int = 0) -> str:
        # The CLI runs its own event loop: give it a thread of its own.
        result = await asyncio.to_thread(self.runner.invoke, cli, list(args), env=self.env)
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.stdout.strip() if code == 0 else result.stderr

    async def lines(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (await self(*args)).splitlines()]


async def test_teams_and_keys_from_the_command_line(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    team_id = await shell("teams", "create", "design", "--budget-usd", "12.5")
    assert team_id.startswith("team_")
    assert "already" in await shell("teams", "create", "design", code=2)
    assert "monthly_budget_usd" in await shell("teams", "create", "x", "--budget-usd", "-3", code=2)
    await shell("teams", "update", "design", "--name", "Design", "--budget-usd", "20")
    teams = await shell.lines("teams", "list", "--json")
    assert [(t["id"], t["name"], t["monthly_budget_usd"]) for t in teams] == [
        (team_id, "Design", "20.000000")
    ]
    await shell("teams", "update", team_id, "--no-budget")
    assert (await shell.lines("teams", "list", "--json"))[0]["monthly_budget_usd"] is None
    assert "no team" in await shell("teams", "update", "nobody", "--name", "x", code=2)
    assert "scopes" in await shell("keys", "create", "--team", "Design", "--scope", "paint", code=2)

    first = await shell(
        "keys", "create", "--team", "Design", "--rate-limit-per-minute", "30",
        "--rate-limit-burst", "3", "--expires-at", "2099-01-01T00:00:00",
    )  # fmt: skip
    assert first.startswith("ig_") and "\n" not in first  # only the key on stdout
    (listed,) = await shell.lines("keys", "list", "--json", "--team", "Design")
    assert listed["prefix"] == first[:11] and first not in json.dumps(listed)
    assert (listed["rate_limit_per_minute"], listed["rate_limit_burst"]) == (30, 3)
    assert listed["expires_at"] == "2099-01-01T00:00:00.000Z"

    second = await shell("keys", "roll", listed["id"], "--grace-seconds", "600")
    assert second.startswith("ig_") and second != first

    backend = Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'imagegate.db'}", None, "x:")
    gateways = start_gateway(backend, tmp_path / "gw", run_worker=False, data_dir=tmp_path)
    async with contextlib.aclosing(gateways):
        gateway = await anext(gateways)
        for key in (first, second):  # the old secret works during its grace period
            assert (await gateway.client(key).create(body())).status_code == 202

        await shell("keys", "revoke", listed["id"])
        gateway.runtime.keys.forget(listed["id"])  # as if the TTL had passed
        for key in (first, second):
            assert (await gateway.client(key).create(body())).status_code == 401
    (revoked,) = await shell.lines("keys", "list", "--json", "--all")
    assert revoked["status"] == "revoked"
    assert await shell.lines("keys", "list", "--json") == []
    assert "only an active key" in await shell("keys", "roll", listed["id"], code=2)
