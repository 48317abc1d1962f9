"""The budget policy's edges at the service level: holds, unpriced routes, months, replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.auth.service import Principal
from app.budgets import service as budgets
from app.budgets.repository import advisory_key
from app.errors import ApiError
from app.jobs import states
from app.jobs.repository import JobRepository
from app.jobs.transitions import Transition
from app.kit.ids import new_job_id
from app.models import Job, LedgerEntry
from app.runtime import Runtime
from tests.budgets.support import KeyIds, ids_of, set_team_budget
from tests.conftest import Gateway
from tests.helpers import new_key


def _plan(*estimates: int | None) -> list[dict[str, Any]]:
    return [
        {"provider": f"p{i}", "upstream_model": "m", "estimate_micros": e}
        for i, e in enumerate(estimates)
    ]


def test_the_hold_covers_the_dearest_candidate_the_job_may_move_to() -> None:
    assert budgets.hold_for(_plan(10_000, 15_000, 12_000)) == 15_000
    assert budgets.hold_for(_plan(10_000, None)) == 10_000
    assert budgets.hold_for(_plan(None)) == 0
    # Dispatch may pass over open breakers to any later candidate: all of them count.
    assert budgets.hold_for(_plan(1, 2, 3, 99_000)) == 99_000


def test_advisory_lock_ids_are_stable_signed_64_bit_and_per_team() -> None:
    first = advisory_key("team_01JD8X3Q5W6Z9K2M4N7P0R1S3T")
    assert first == advisory_key("team_01JD8X3Q5W6Z9K2M4N7P0R1S3T")
    assert first != advisory_key("team_01JD8X3Q5W6Z9K2M4N7P0R1S3V")
    assert -(2**63) <= first < 2**63


async def _team(gateway: Gateway, budget: str | None) -> KeyIds:
    ids = await ids_of(gateway.runtime, await new_key(gateway.runtime))
    await set_team_budget(gateway.runtime, ids.team_id, budget)
    return ids


def _job(ids: KeyIds, plan: list[dict[str, Any]], created: datetime | None = None) -> Job:
    now = created or datetime.now(UTC)
    return Job(
        id=new_job_id(),
        team_id=ids.team_id,
        api_key_id=ids.key_id,
        model="black-forest-labs/flux-2-dev",
        input={"prompt": "policy"},
        request_hash="0" * 64,
        status="pending",
        stage="queued",
        route_plan=plan,
        estimated_cost_micros=plan[0]["estimate_micros"],
        created_at=now,
        updated_at=now,
        deadline_at=now + timedelta(hours=1),
        attempt_count=0,
        poll_errors=0,
        cancel_requested=False,
        lease_epoch=0,
    )


async def _admit(runtime: Runtime, ids: KeyIds, job: Job) -> None:
    principal = Principal(ids.key_id, ids.team_id, frozenset({"images:write"}))
    async with runtime.sessions() as session:
        session.add(job)  # no next_action_at: the shared worker leaves it alone
        await budgets.reserve(session, principal, job)
        await session.commit()


async def _rows(runtime: Runtime, job_id: str) -> dict[str, tuple[int, str]]:
    async with runtime.sessions() as session:
        query = select(LedgerEntry.kind, LedgerEntry.amount_micros, LedgerEntry.month).where(
            LedgerEntry.job_id == job_id
        )
        return {kind: (amount, month) for kind, amount, month in (await session.execute(query))}


async def test_under_a_budget_unpriced_fallbacks_are_dropped_from_the_route(
    gateway: Gateway,
) -> None:
    ids = await _team(gateway, "1.00")
    job = _job(ids, _plan(10_000, None, 12_000))
    await _admit(gateway.runtime, ids, job)
    async with gateway.runtime.sessions() as session:
        stored = await session.get(Job, job.id)
    assert stored is not None
    assert [c["provider"] for c in stored.route_plan] == ["p0", "p2"]
    assert (await _rows(gateway.runtime, job.id))["reserve"][0] == 12_000


async def test_under_a_budget_an_unpriced_first_choice_is_refused_with_402(
    gateway: Gateway,
) -> None:
    ids = await _team(gateway, "1.00")
    job = _job(ids, _plan(None, 10_000))
    with pytest.raises(ApiError) as refused:
        await _admit(gateway.runtime, ids, job)
    assert refused.value.status == 402
    assert refused.value.code == "budget_unpriced"
    assert refused.value.extra == {"unpriced_providers": ["p0"]}
    assert "routing.exclude" in refused.value.detail


async def test_without_a_budget_an_unpriced_job_is_admitted_holding_nothing(
    gateway: Gateway,
) -> None:
    ids = await _team(gateway, None)
    job = _job(ids, _plan(None, None))
    await _admit(gateway.runtime, ids, job)
    assert (await _rows(gateway.runtime, job.id))["reserve"][0] == 0


async def test_a_job_ending_next_month_settles_in_the_month_it_was_admitted(
    gateway: Gateway,
) -> None:
    ids = await _team(gateway, "1.00")
    job = _job(ids, _plan(7_000), created=datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC))
    await _admit(gateway.runtime, ids, job)
    async with gateway.runtime.sessions() as session:
        repo = JobRepository(session)
        for current, target in (
            (states.QUEUED, states.SUBMITTING),
            (states.SUBMITTING, states.RUNNING),
            (states.RUNNING, states.FINALIZING),
        ):
            assert await repo.transition(job.id, current, target, epoch=None)
        done = await repo.transition(
            job.id,
            states.FINALIZING,
            states.COMPLETED,
            epoch=None,
            values={"actual_cost_micros": 6_500},
        )
        assert done
        await session.commit()
    assert await _rows(gateway.runtime, job.id) == {
        "reserve": (7_000, "2026-01"),
        "refund": (-7_000, "2026-01"),
        "settle": (6_500, "2026-01"),
    }


async def test_replaying_the_terminal_listener_writes_nothing_more(gateway: Gateway) -> None:
    ids = await _team(gateway, "1.00")
    job = _job(ids, _plan(4_000))
    await _admit(gateway.runtime, ids, job)
    async with gateway.runtime.sessions() as session:
        assert await JobRepository(session).transition(
            job.id, states.QUEUED, states.FAILED, epoch=None
        )
        await session.commit()
    for _ in range(2):
        async with gateway.runtime.sessions() as session:
            row = await session.get(Job, job.id)
            assert row is not None
            replay = Transition(row, states.QUEUED, states.FAILED)
            await budgets.on_transition(session, replay)
            await session.commit()
    assert await _rows(gateway.runtime, job.id) == {
        "reserve": (4_000, job.created_at.strftime("%Y-%m")),
        "refund": (-4_000, job.created_at.strftime("%Y-%m")),
    }
