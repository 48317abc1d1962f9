"""A submit's answer that arrives late, and a commit whose answer is lost (reliability items 2, 4).

The upstream is the real simulator behind a gate, so a test decides when its answer comes back;
the lease runs out and the reaper fences the dispatcher in between, by SQL on the database clock.
Every job ends terminal, each attempt is sent at most once, and no upstream id is forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.db import db_now
from app.jobs import states
from app.models import Attempt, Job, LedgerEntry
from app.providers.base import Submitted, UpstreamRef, UpstreamRequest
from app.runtime import Runtime
from app.worker import dispatch as dispatch_module
from app.worker.dispatch import dispatch
from app.worker.leases import Claim, claim_due, reap_expired
from app.worker.runner import STEPS
from tests.conftest import Backend, Gateway, start_gateway
from tests.helpers import body, new_key


class GatedUpstream:
    """The simulator, answering a submit only once ``gate`` opens; counts what it was sent."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.sent = asyncio.Event()
        self.submitted: list[Submitted] = []
        self.cancelled: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def submit(self, request: UpstreamRequest) -> Submitted:
        self.sent.set()
        answer: Submitted = await self.inner.submit(request)
        self.submitted.append(answer)
        await self.gate.wait()
        return answer

    async def cancel(self, ref: UpstreamRef) -> None:
        self.cancelled.append(ref.upstream_id)


@pytest.fixture
async def stepped(backend: Backend, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway without a worker: the test runs each step itself."""
    async for gw in start_gateway(
        backend, tmp_path, run_worker=False, submit_unknown_grace_s=600, lease_ttl_s=60
    ):
        yield gw


async def _queued_job(gateway: Gateway) -> str:
    client = gateway.client(await new_key(gateway.runtime))
    created = await client.create(body("late answer"))
    assert created.status_code == 202, created.text
    return str(created.json()["job_id"])


async def _claim(runtime: Runtime, owner: str) -> Claim:
    async with runtime.sessions() as session:
        [claim] = await claim_due(session, owner, limit=1, lease_s=60)
        await session.commit()
    return claim


async def _expire_and_reap(runtime: Runtime, job_id: str, *, grace_s: float) -> None:
    async with runtime.sessions() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=db_now(-1))
        )
        assert await reap_expired(session, submitting_grace_s=grace_s) == [job_id]
        await session.commit()


async def _row(runtime: Runtime, job_id: str) -> tuple[Job, list[Attempt]]:
    async with runtime.sessions() as session:
        job = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()
        query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)
        return job, list((await session.execute(query)).scalars())


async def _run_to_the_end(runtime: Runtime, job_id: str) -> Job:
    """Claim and run whatever is due, as the worker loop would, until the job is terminal."""
    async with asyncio.timeout(30):
        while True:
            job, _ = await _row(runtime, job_id)
            if job.stage == states.Stage.DONE:
                return job
            async with runtime.sessions() as session:
                # A due time in the future is brought forward: this is not a test of timers.
                await session.execute(
                    update(Job).where(Job.id == job_id).values(next_action_at=db_now())
                )
                claims = await claim_due(session, "worker", limit=1, lease_s=60)
                await session.commit()
            for claim in claims:
                await STEPS[claim.stage](runtime, claim)
            await asyncio.sleep(0.02)


async def _dispatch_into_gate(
    gateway: Gateway,
) -> tuple[GatedUpstream, str, Claim, asyncio.Task[None]]:
    """A queued job claimed by "A" and dispatched to a gated simulator: the submit is sent and
    its answer held until the test opens the gate."""
    runtime = gateway.runtime
    upstream = GatedUpstream(runtime.providers["simulator"])
    runtime.providers["simulator"] = upstream
    job_id = await _queued_job(gateway)
    claim = await _claim(runtime, "A")
    step = asyncio.create_task(dispatch(runtime, claim))
    await upstream.sent.wait()
    return upstream, job_id, claim, step


async def _refunded(runtime: Runtime, job_id: str) -> bool:
    async with runtime.sessions() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
                LedgerEntry.job_id == job_id, LedgerEntry.kind.in_(["reserve", "refund"])
            )
        )
    return total == 0


async def test_an_answer_recorded_after_the_reaper_fenced_the_dispatcher_still_wins(
    stepped: Gateway,
) -> None:
    runtime = stepped.runtime
    upstream, job_id, claim, step = await _dispatch_into_gate(stepped)
    # A's lease runs out while the upstream's answer is on its way: the reaper fences A.
    await _expire_and_reap(runtime, job_id, grace_s=600)
    upstream.gate.set()
    await step

    job, [attempt] = await _row(runtime, job_id)
    [answer] = upstream.submitted
    assert job.stage == states.Stage.UPSTREAM_QUEUED.value
    assert job.lease_owner is None and job.lease_epoch > claim.epoch
    assert attempt.state == "accepted" and attempt.upstream_id == answer.upstream_id
    done = await _run_to_the_end(runtime, job_id)
    assert done.status == "completed"
    assert len(upstream.submitted) == 1  # never sent twice
    assert upstream.cancelled == []  # a job that completes is never cancelled upstream


async def test_a_late_answer_after_the_outcome_was_declared_unknown_changes_no_verdict(
    stepped: Gateway,
) -> None:
    runtime = stepped.runtime
    upstream, job_id, _, step = await _dispatch_into_gate(stepped)
    # The grace passes with no answer: B reconciles and declares the outcome unknown.
    await _expire_and_reap(runtime, job_id, grace_s=0)
    reconcile = await _claim(runtime, "B")
    assert reconcile.stage is states.Stage.SUBMITTING
    await STEPS[reconcile.stage](runtime, reconcile)
    upstream.gate.set()
    await step  # A's answer comes too late: it must not move the job

    job, [attempt] = await _row(runtime, job_id)
    [answer] = upstream.submitted
    assert (job.status, job.error_code) == ("failed", "submit_outcome_unknown")
    assert attempt.state == "unknown"
    assert attempt.upstream_id == answer.upstream_id  # the paid submission stays known
    assert await _refunded(runtime, job_id)
    assert len(upstream.submitted) == 1
    # Nobody will collect that result: the upstream job is cancelled so it stops costing money.
    assert upstream.cancelled == [answer.upstream_id]


async def test_a_late_answer_is_adopted_by_a_reconcile_that_comes_after_it(
    stepped: Gateway,
) -> None:
    """The answer lost its race for the lease to a webhook-less reconcile that had not yet
    decided: the upstream id kept on the attempt lets the next reconcile adopt the job."""
    runtime = stepped.runtime
    job_id = await _queued_job(stepped)
    claim = await _claim(runtime, "A")
    ready = await dispatch_module._prepare(runtime, claim)
    assert ready is not None
    answer = await runtime.providers["simulator"].submit(ready.request)
    await _expire_and_reap(runtime, job_id, grace_s=0)
    holder = await _claim(runtime, "B")  # holds the lease when A's answer arrives
    await dispatch_module._record(runtime, ready.claim, ready.provider, ready.attempt_id, answer)
    job, [attempt] = await _row(runtime, job_id)
    assert job.stage == states.Stage.SUBMITTING.value and job.lease_owner == "B"
    assert attempt.upstream_id == answer.upstream_id
    await STEPS[holder.stage](runtime, holder)  # B reconciles: adopts instead of failing
    done = await _run_to_the_end(runtime, job_id)
    assert done.status == "completed"


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
async def test_a_submitting_commit_whose_answer_is_lost_is_resolved_before_sending(
    stepped: Gateway, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """The connection drops on the commit that records ``submitting``. If it landed, the job is
    sent once and completes; if not, nothing was sent and the job is queued again."""
    runtime = stepped.runtime
    upstream = GatedUpstream(runtime.providers["simulator"])
    upstream.gate.set()
    runtime.providers["simulator"] = upstream
    job_id = await _queued_job(stepped)
    claim = await _claim(runtime, "A")
    sessions = runtime.sessions
    failed = False

    def session_with_a_lost_commit() -> Any:
        session = sessions()
        commit = session.commit

        async def drop_the_answer() -> None:
            nonlocal failed
            if failed:
                return await commit()
            failed = True
            if landed:
                await commit()
            else:
                await session.rollback()
            raise ConnectionResetError("connection reset by peer (injected)")

        session.commit = drop_the_answer  # type: ignore[method-assign]
        return session

    monkeypatch.setattr(runtime, "sessions", session_with_a_lost_commit)
    if landed:
        await dispatch(runtime, claim)
    else:
        with pytest.raises(ConnectionResetError):
            await dispatch(runtime, claim)  # the runner hands the job back
    monkeypatch.setattr(runtime, "sessions", sessions)

    job, attempts = await _row(runtime, job_id)
    if landed:
        assert job.stage == states.Stage.UPSTREAM_QUEUED.value
        assert [a.upstream_id for a in attempts] == [upstream.submitted[0].upstream_id]
    else:
        assert job.stage == states.Stage.QUEUED.value and attempts == []
        assert upstream.submitted == []
        async with runtime.sessions() as session:  # what the runner's hand-back does
            await session.execute(
                update(Job).where(Job.id == job_id).values(lease_owner=None, lease_expires_at=None)
            )
            await session.commit()
    done = await _run_to_the_end(runtime, job_id)
    assert done.status == "completed"
    assert len(upstream.submitted) == 1


async def test_a_failed_publish_after_the_submitting_commit_does_not_strand_the_job(
    stepped: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishing (cache and wake-ups) fails after every commit, e.g. the pool timed out or
    Redis is away: the committed step still goes on, so the job is sent and recorded."""
    runtime = stepped.runtime
    job_id = await _queued_job(stepped)
    claim = await _claim(runtime, "A")

    async def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError("cache unreachable (injected)")

    monkeypatch.setattr(runtime.cache, "set_versioned", unreachable)
    await dispatch(runtime, claim)
    monkeypatch.undo()
    job, [attempt] = await _row(runtime, job_id)
    assert job.stage == states.Stage.UPSTREAM_QUEUED.value and attempt.upstream_id
    done = await _run_to_the_end(runtime, job_id)
    assert done.status == "completed"
