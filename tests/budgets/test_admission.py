"""Budgets through the API: concurrent admissions across replicas, settlement, refunds, 402s.

Acceptance (issue 5, line 3): N concurrent creates of estimated cost r against a budget B with
N*r > B admit exactly floor(B/r), on PostgreSQL and on SQLite, through two replicas (two apps,
two engines, one job store); after settlement the team has spent at most B.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.kit.timeutil import utcnow
from tests.budgets.support import (
    ids_of,
    ledger_figures,
    priced,
    replica,
    set_key_budget,
    set_team_budget,
    wait_terminal,
)
from tests.conftest import Backend
from tests.helpers import body, new_key
from tests.procs import free_port

PRICE = "0.010000"  # r
BUDGET = "0.105000"  # B: floor(B / r) = 10
CONCURRENT = 24  # N: N * r = 0.24 > B


async def test_concurrent_creates_across_replicas_admit_exactly_floor_b_over_r(
    own_backend: Backend, tmp_path: Path
) -> None:
    settings = {"simulator": priced(PRICE), "db_pool_size": 3}  # a shared server: stay small
    async with (
        replica(own_backend, tmp_path / "a", **settings) as first,
        replica(own_backend, tmp_path / "b", **settings) as second,
    ):
        key = await new_key(first.runtime)
        ids = await ids_of(first.runtime, key)
        await set_team_budget(first.runtime, ids.team_id, BUDGET)
        clients = [first.client(key), second.client(key)]

        answers = await asyncio.gather(
            *(clients[i % 2].create(body(f"fox {i}")) for i in range(CONCURRENT))
        )

        admitted = [a.json() for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code != 202]
        assert len(admitted) == 10, [a.status_code for a in answers]
        assert all(job["cost"]["estimated_usd"] == PRICE for job in admitted)
        for answer in refused:
            assert answer.status_code == 402, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            problem = answer.json()
            assert problem["code"] == "budget_exceeded"
            # Every refusal saw the 10 holds: 0.105 - 10 * 0.01 remain, and it says so.
            assert problem["remaining_usd"] == "0.005000"
            assert problem["required_usd"] == PRICE
            assert problem["budget_usd"] == BUDGET
            assert problem["budget_scope"] == "team"
            assert problem["month"] == utcnow().strftime("%Y-%m")
            assert "0.005000 USD remaining" in problem["detail"]

        held = await ledger_figures(first.runtime, ids.team_id)
        assert held.by_kind["reserve"] == 100_000  # some may have settled already

        statuses = await wait_terminal(first.runtime, [job["job_id"] for job in admitted])
        assert set(statuses) == {"completed"}

        settled = await ledger_figures(first.runtime, ids.team_id)
        assert settled.spent == 100_000 <= 105_000
        assert settled.held == 0
        assert settled.rows_by_kind == {"reserve": 10, "refund": 10, "settle": 10}
        assert settled.committed == settled.spent

        # The usage report agrees with the ledger.
        usage = await first.http.get(
            "/v1/usage", params={"group_by": "team"}, headers=clients[0].headers
        )
        assert usage.status_code == 200, usage.text
        (group,) = usage.json()["groups"]
        assert group["jobs"]["completed"] == 10
        assert group["actual_usd"] == "0.100000"
        standing = await first.http.get("/v1/usage/budget", headers=clients[0].headers)
        assert standing.json() == {
            "month": utcnow().strftime("%Y-%m"),
            "team": {
                "budget_usd": BUDGET,
                "spent_usd": "0.100000",
                "reserved_usd": "0.000000",
                "remaining_usd": "0.005000",
            },
            "key": {
                "budget_usd": None,
                "spent_usd": "0.100000",
                "reserved_usd": "0.000000",
                "remaining_usd": None,
            },
        }


async def test_failed_and_cancelled_jobs_release_their_hold(
    own_backend: Backend, tmp_path: Path
) -> None:
    # The API replica runs no worker, so nothing ends until the failing worker replica starts:
    # every hold below is known at each step, whatever the machine's speed.
    api_replica = replica(own_backend, tmp_path / "api", run_worker=False, simulator=priced(PRICE))
    async with api_replica as api:
        key = await new_key(api.runtime)
        ids = await ids_of(api.runtime, key)
        await set_team_budget(api.runtime, ids.team_id, "0.020000")
        client = api.client(key)

        doomed = (await client.create(body("fails upstream"))).json()["job_id"]
        cancelled = (await client.create(body("cancelled by the client"))).json()["job_id"]
        full = await client.create(body("over budget"))
        assert full.status_code == 402 and full.json()["remaining_usd"] == "0.000000"

        assert (await client.cancel(cancelled)).status_code == 200
        replacement = await client.create(body("fits again after the cancel"))
        assert replacement.status_code == 202
        assert (await client.create(body("over budget again"))).status_code == 402

        failing = priced(PRICE, failure_rate=1.0)
        async with replica(own_backend, tmp_path / "worker", simulator=failing):
            failed = [doomed, replacement.json()["job_id"]]
            assert await wait_terminal(api.runtime, failed) == ["failed", "failed"]

        figures = await ledger_figures(api.runtime, ids.team_id)
        assert figures.by_kind == {"reserve": 30_000, "refund": -30_000}
        assert figures.rows_by_kind == {"reserve": 3, "refund": 3}
        assert figures.committed == figures.spent == 0
        # The whole budget is available again.
        again = await asyncio.gather(*(client.create(body(f"retry {i}")) for i in range(3)))
        assert sorted(a.status_code for a in again) == [202, 202, 402]


async def test_a_keys_own_budget_limits_that_key_only(own_backend: Backend, tmp_path: Path) -> None:
    async with replica(own_backend, tmp_path, simulator=priced(PRICE)) as gateway:
        team = f"team-keys-{tmp_path.name}"
        limited, other = await new_key(gateway.runtime, team), await new_key(gateway.runtime, team)
        limited_ids = await ids_of(gateway.runtime, limited)
        await set_team_budget(gateway.runtime, limited_ids.team_id, "0.050000")
        await set_key_budget(gateway.runtime, limited_ids.key_id, "0.020000")

        answers = [await gateway.client(limited).create(body(f"k {i}")) for i in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 402]
        problem = answers[2].json()
        assert problem["budget_scope"] == "key"
        assert problem["remaining_usd"] == "0.000000"
        assert problem["budget_usd"] == "0.020000"

        # The team still has room for its other key, up to the team's own budget.
        others = [await gateway.client(other).create(body(f"o {i}")) for i in range(4)]
        assert [a.status_code for a in others] == [202, 202, 202, 402]
        assert others[3].json()["budget_scope"] == "team"
        assert others[3].json()["remaining_usd"] == "0.000000"


async def test_without_a_budget_jobs_are_admitted_and_still_recorded(
    own_backend: Backend, tmp_path: Path
) -> None:
    async with replica(own_backend, tmp_path, simulator=priced("0.004")) as gateway:
        key = await new_key(gateway.runtime)
        ids = await ids_of(gateway.runtime, key)
        client = gateway.client(key)
        created = await client.create(body("no budget", num_outputs=2))
        assert created.status_code == 202
        assert (await client.wait(created.json()["job_id"]))["status"] == "completed"
        figures = await ledger_figures(gateway.runtime, ids.team_id)
        # Spend is recorded even without a budget, so a budget set mid-month counts it.
        assert figures.by_kind == {"reserve": 8_000, "refund": -8_000, "settle": 8_000}


async def test_redis_unreachable_budgets_still_hold(isolated_pg: str, tmp_path: Path) -> None:
    """Acceptance line 7 (budgets): they live in the job store, so a dead Redis changes nothing."""
    closed = Backend("postgres", isolated_pg, f"redis://127.0.0.1:{free_port()}/0", "igtest:down:")
    async with replica(closed, tmp_path, simulator=priced(PRICE)) as gateway:
        key = await new_key(gateway.runtime)
        ids = await ids_of(gateway.runtime, key)
        await set_team_budget(gateway.runtime, ids.team_id, "0.025000")
        client = gateway.client(key)

        answers = await asyncio.gather(*(client.create(body(f"r {i}")) for i in range(6)))

        assert sorted(a.status_code for a in answers) == [202, 202, 402, 402, 402, 402]
        admitted = [a.json()["job_id"] for a in answers if a.status_code == 202]
        finished = await asyncio.gather(*(client.wait(job_id) for job_id in admitted))
        assert {job["status"] for job in finished} == {"completed"}
        figures = await ledger_figures(gateway.runtime, ids.team_id)
        assert figures.spent == 20_000 <= 25_000 and figures.held == 0


async def test_402_is_refused_before_any_upstream_submission(
    own_backend: Backend, tmp_path: Path
) -> None:
    ledger = tmp_path / "submissions.jsonl"
    async with replica(
        own_backend, tmp_path, simulator=priced(PRICE, ledger_path=ledger)
    ) as gateway:
        key = await new_key(gateway.runtime)
        ids = await ids_of(gateway.runtime, key)
        await set_team_budget(gateway.runtime, ids.team_id, "0.009999")
        refused = await gateway.client(key).create(body("too dear"))
        assert refused.status_code == 402
        assert refused.json()["remaining_usd"] == "0.009999"
        listing = await gateway.http.get("/v1/images", headers=gateway.client(key).headers)
        assert listing.json()["data"] == []  # the refused job was rolled back, not stored
        assert not ledger.exists()
