"""A Hypothesis state machine over the real budget code and a real job store.

Rules create jobs (priced, unpriced, with a dearer fallback, from a key with or without its own
budget), fail them, cancel them (queued or at the upstream), settle them (completed with an actual
cost up to their hold) and replay the terminal listener. After every step the ledger's SUMs must
equal the model's balances, each job must have exactly the rows its state implies, and neither
the team nor the key may be over its budget. The model decides admissions by the documented
policy, independently of the code, and the code must decide the same.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.service import Principal
from app.budgets import service as budgets
from app.db import create_engine, create_sessionmaker
from app.errors import ApiError
from app.jobs import states
from app.jobs.repository import JobRepository
from app.jobs.transitions import Transition
from app.kit.ids import new_id, new_job_id
from app.kit.timeutil import utcnow
from app.models import ApiKey, Job, LedgerEntry, Team
from app.setup import migrate

MONTH = utcnow().strftime("%Y-%m")
amounts = st.integers(min_value=0, max_value=20_000)
# About one estimate in ten is unpriced (None): enough to exercise the policy, not to drown it.
maybe_priced = st.integers(min_value=-2_000, max_value=20_000).map(lambda v: None if v < 0 else v)
budgets_or_none = st.none() | st.integers(min_value=0, max_value=40_000)


@dataclass
class ModelJob:
    id: str
    key: int
    hold: int
    state: states.JobState = states.QUEUED
    actual: int | None = None


class LedgerMachine(RuleBasedStateMachine):
    loop: ClassVar[asyncio.AbstractEventLoop]
    engine: ClassVar[AsyncEngine]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: async_sessionmaker[AsyncSession] = create_sessionmaker(self.engine)
        self.jobs: dict[str, ModelJob] = {}
        self.team_id = new_id("team")
        self.key_ids = [new_id("key"), new_id("key")]
        self.team_budget: int | None = None
        self.key_budget: int | None = None  # key 0's own budget; key 1 has none

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # -- the model --------------------------------------------------------------------------

    def committed(self, key: int | None = None) -> int:
        return sum(
            (job.actual or 0) if job.state == states.COMPLETED else job.hold
            for job in self.jobs.values()
            if (key is None or job.key == key)
            and job.state not in (states.FAILED, states.CANCELLED)
        )

    def expected_admission(self, key: int, plan: list[int | None]) -> int | str:
        """The hold, or the refusal code, by the policy in ``app.budgets.service``."""
        key_budget = self.key_budget if key == 0 else None
        if self.team_budget is None and key_budget is None:
            return max((e for e in plan if e is not None), default=0)
        if plan[0] is None:
            return "402 budget_unpriced"
        hold = max(e for e in plan if e is not None)
        if self.team_budget is not None and self.committed() + hold > self.team_budget:
            return "402 budget_exceeded"
        if key_budget is not None and self.committed(key) + hold > key_budget:
            return "402 budget_exceeded"
        return hold

    # -- rules ------------------------------------------------------------------------------

    @initialize(team_budget=budgets_or_none, key_budget=budgets_or_none)
    def open_team(self, team_budget: int | None, key_budget: int | None) -> None:
        self.team_budget, self.key_budget = team_budget, key_budget

        async def go() -> None:
            async with self.sessions() as session:
                session.add(
                    Team(id=self.team_id, name=self.team_id, monthly_budget_micros=team_budget)
                )
                await session.flush()
                for index, key_id in enumerate(self.key_ids):
                    session.add(
                        ApiKey(
                            id=key_id,
                            team_id=self.team_id,
                            name=f"key {index}",
                            prefix="ig_test",
                            secret_hmac=uuid.uuid4().hex + uuid.uuid4().hex,
                            scopes=["images:write"],
                            monthly_budget_micros=key_budget if index == 0 else None,
                        )
                    )
                await session.commit()

        self.run(go())

    @rule(
        key=st.sampled_from([0, 1]),
        estimate=maybe_priced,
        fallback=st.just("absent") | maybe_priced,
    )
    def create(self, key: int, estimate: int | None, fallback: int | str | None) -> None:
        plan: list[int | None] = [estimate]
        if not isinstance(fallback, str):
            plan.append(fallback)  # a second candidate, which failover may move the job to
        expected = self.expected_admission(key, plan)
        job_id = new_job_id()
        outcome = self.run(self._admit(job_id, key, plan))
        assert outcome == expected, (outcome, expected, plan)
        event("admission", "admitted" if isinstance(outcome, int) else outcome)
        if isinstance(outcome, int):
            self.jobs[job_id] = ModelJob(job_id, key, outcome)

    async def _admit(self, job_id: str, key: int, plan: list[int | None]) -> int | str:
        now = utcnow()
        principal = Principal(self.key_ids[key], self.team_id, frozenset({"images:write"}))
        job = Job(
            id=job_id,
            team_id=self.team_id,
            api_key_id=self.key_ids[key],
            model="black-forest-labs/flux-2-dev",
            input={"prompt": "model"},
            request_hash="0" * 64,
            status="pending",
            stage="queued",
            route_plan=[
                {"provider": f"p{i}", "upstream_model": "m", "estimate_micros": e}
                for i, e in enumerate(plan)
            ],
            estimated_cost_micros=plan[0],
            created_at=now,
            updated_at=now,
            deadline_at=now + timedelta(hours=1),
            attempt_count=0,
            poll_errors=0,
            cancel_requested=False,
            lease_epoch=0,
        )
        async with self.sessions() as session:
            session.add(job)  # no next_action_at: no worker ever claims it
            try:
                await budgets.reserve(session, principal, job)
            except ApiError as exc:
                await session.rollback()
                return f"{exc.status} {exc.code}"
            await session.commit()
        return await self._hold(job_id)

    async def _hold(self, job_id: str) -> int:
        async with self.sessions() as session:
            amount = await session.scalar(
                select(LedgerEntry.amount_micros).where(
                    LedgerEntry.job_id == job_id, LedgerEntry.kind == "reserve"
                )
            )
        assert amount is not None
        return int(amount)

    def _open(self) -> list[str]:
        return sorted(j.id for j in self.jobs.values() if not j.state.is_terminal)

    def _ended(self) -> list[str]:
        return sorted(j.id for j in self.jobs.values() if j.state.is_terminal)

    async def _walk(self, job_id: str, path: list[states.JobState], last: dict[str, Any]) -> None:
        model = self.jobs[job_id]
        async with self.sessions() as session:
            repo = JobRepository(session)
            current = model.state
            for index, target in enumerate(path):
                values = last if index == len(path) - 1 else None
                assert await repo.transition(job_id, current, target, epoch=None, values=values)
                current = target
            await session.commit()
        model.state = current

    @precondition(lambda self: any(j.state == states.QUEUED for j in self.jobs.values()))
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        queued = sorted(j.id for j in self.jobs.values() if j.state == states.QUEUED)
        job_id = data.draw(st.sampled_from(queued))
        self.run(self._walk(job_id, [states.SUBMITTING, states.RUNNING], {}))

    @precondition(lambda self: bool(self._open()))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self._open()))
        self.run(self._walk(job_id, [states.FAILED], {"error_code": "upstream_error"}))

    @precondition(lambda self: bool(self._open()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self._open()))
        self.run(self._walk(job_id, [states.CANCELLED], {"cancel_requested": True}))

    @precondition(lambda self: bool(self._open()))
    @rule(data=st.data(), share=st.fractions(min_value=0, max_value=1))
    def settle(self, data: st.DataObject, share: Any) -> None:
        job_id = data.draw(st.sampled_from(self._open()))
        model = self.jobs[job_id]
        actual = int(model.hold * share)
        path = [states.SUBMITTING, states.RUNNING] if model.state == states.QUEUED else []
        path += [states.FINALIZING, states.COMPLETED]
        self.run(self._walk(job_id, path, {"actual_cost_micros": actual}))
        model.actual = actual

    @precondition(lambda self: bool(self._ended()))
    @rule(data=st.data())
    def replay_the_terminal_listener(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self._ended()))

        async def go() -> None:
            async with self.sessions() as session:
                job = await session.get(Job, job_id)
                assert job is not None
                state = states.state_of(job.status, job.stage)
                await budgets.on_transition(session, Transition(job, states.RUNNING, state))
                await session.commit()

        self.run(go())

    # -- invariants -------------------------------------------------------------------------

    async def _ledger(self) -> tuple[dict[str, dict[str, int]], Any, Any]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(LedgerEntry.job_id, LedgerEntry.kind, LedgerEntry.amount_micros).where(
                    LedgerEntry.team_id == self.team_id
                )
            )
            by_job: dict[str, dict[str, int]] = {}
            for job_id, kind, amount in rows.all():
                assert kind not in by_job.setdefault(job_id, {}), f"two {kind} rows for {job_id}"
                by_job[job_id][kind] = int(amount)
            team = await budgets.balance(session, self.team_id, MONTH)
            key = await budgets.balance(session, self.team_id, MONTH, self.key_ids[0])
        return by_job, team, key

    @invariant()
    def ledger_sums_equal_balances_within_budget(self) -> None:
        by_job, team, key = self.run(self._ledger())
        # Each job has exactly the rows its state implies; refused admissions left none.
        assert set(by_job) == set(self.jobs)
        for job in self.jobs.values():
            expected = {"reserve": job.hold}
            if job.state.is_terminal:
                expected["refund"] = -job.hold
            if job.state == states.COMPLETED:
                expected["settle"] = job.actual or 0
            assert by_job[job.id] == expected, job
        spent = sum(j.actual or 0 for j in self.jobs.values() if j.state == states.COMPLETED)
        held = sum(j.hold for j in self.jobs.values() if not j.state.is_terminal)
        assert team.spent_micros == spent
        assert team.reserved_micros == held
        assert team.committed_micros == self.committed() == spent + held
        assert key.committed_micros == self.committed(key=0)
        if self.team_budget is not None:
            assert team.committed_micros <= self.team_budget
        if self.key_budget is not None:
            assert key.committed_micros <= self.key_budget


def _run_machine(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        LedgerMachine.loop = loop
        LedgerMachine.engine = create_engine(database_url)
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=12,
                stateful_step_count=18,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(LedgerMachine.engine.dispose())
        loop.close()


# Each run gets a database of its own: this test is synchronous (Hypothesis drives it), so the
# session's event loop is paused meanwhile, and a shared database could be left locked by a
# paused transaction of the shared gateway's worker.


def test_ledger_sums_stay_equal_to_balances_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    _run_machine(url)


def test_ledger_sums_stay_equal_to_balances_on_postgres(fresh_pg_url: str) -> None:
    migrate(fresh_pg_url)
    _run_machine(fresh_pg_url)
