"""The worker loop: wake on a signal, a timer or stop; claim due jobs; run their step.

One claim query serves every step: the claimed job's stage picks the step (dispatch, poll,
finalize, reconcile). Client webhooks due for a try are claimed from the outbox with whatever
room is left. Steps run as tasks up to ``worker_concurrency`` at once, so a slow upstream or
receiver never holds up the rest. While a step runs, a heartbeat extends its job's lease every
third of ``lease_ttl_s`` (one statement for all of them): a lease expires only when its worker
is dead or stalled, never because a step queued behind others (CPU, thread pool, database) on a
busy host, which would hand live work to another worker again and again. The reaper frees
expired leases every few seconds; the
retention sweep deletes outputs older than ``retention_days`` every
``retention_sweep_interval_s``. On stop the loop claims nothing more and waits for the steps in
flight (a submit in flight must be recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from app.jobs.states import Stage
from app.kit.ids import new_id
from app.metrics.worker import observe_claims
from app.runtime import Runtime
from app.webhooks.repository import DeliveryClaim
from app.worker.deliver import claim_deliveries, deliver
from app.worker.dispatch import dispatch
from app.worker.finalize import finalize
from app.worker.leases import (
    Claim,
    claim_due,
    extend_leases,
    reap_expired,
    release_after_failure,
)
from app.worker.retention import sweep_expired_outputs
from app.worker.track import poll, reconcile

log = structlog.get_logger("imagegate.worker")

Step = Callable[[Runtime, Claim], Awaitable[None]]
STEPS: dict[Stage, Step] = {
    Stage.QUEUED: dispatch,
    Stage.SUBMITTING: reconcile,
    Stage.UPSTREAM_QUEUED: poll,
    Stage.RUNNING: poll,
    Stage.FINALIZING: finalize,
}
REAP_EVERY_S = 5.0


class Worker:
    def __init__(self, runtime: Runtime, *, name: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-6:]}"
        self.inflight: set[asyncio.Task[None]] = set()
        self.held: dict[str, Claim] = {}  # job id -> the claim a step of ours is running
        self._room = asyncio.Event()
        self._last_reap = 0.0
        self._last_retention = 0.0
        self._retention: asyncio.Task[int] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker started", worker=self.name)
        stopping = asyncio.create_task(stop.wait())
        heartbeat = asyncio.create_task(self._keep_leases(), name="lease-heartbeat")
        try:
            while not stop.is_set():
                claimed = await self._tick_safely()
                if claimed:
                    continue  # more may be due right away
                await self._sleep(stopping)
        finally:
            stopping.cancel()
            if self._retention is not None:
                self._retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._retention
            await self._drain()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            log.info("worker stopped", worker=self.name)

    async def _keep_leases(self) -> None:
        """Extend the leases of the steps in flight, every third of a lease, until cancelled."""
        while True:
            await asyncio.sleep(self.settings.lease_ttl_s / 3)
            try:
                await self.extend_leases()
            except Exception as exc:  # the database is away: the leases may run out, as designed
                log.info("lease heartbeat failed", error=type(exc).__name__)

    async def extend_leases(self) -> int:
        if not self.held:
            return 0
        async with self.runtime.sessions() as session:
            extended = await extend_leases(
                session, self.name, sorted(self.held), lease_s=self.settings.lease_ttl_s
            )
            await session.commit()
        return extended

    async def _sleep(self, stopping: asyncio.Task[bool]) -> None:
        waker = asyncio.create_task(
            self.runtime.signals.wait("wake", self.settings.worker_idle_interval_s)
        )
        room = asyncio.create_task(self._room.wait())
        try:
            await asyncio.wait(
                {waker, room, stopping},
                timeout=self.settings.worker_idle_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (waker, room):
                task.cancel()
            self._room.clear()

    async def _tick_safely(self) -> int:
        try:
            return await self.tick()
        except Exception as exc:  # a database blip must not kill the loop
            log.warning("worker tick failed", error=type(exc).__name__, detail=str(exc)[:200])
            await asyncio.sleep(0.5)
            return 0

    async def tick(self) -> int:
        """One round: reap if it is time, claim what is due (up to free capacity), start it."""
        if time.monotonic() - self._last_reap >= REAP_EVERY_S:
            await self.reap()
        self._maybe_sweep_retention()
        room = self.settings.worker_concurrency - len(self.inflight)
        if room <= 0:
            return 0
        async with self.runtime.sessions() as session:
            claims = await claim_due(
                session,
                self.name,
                limit=min(room, self.settings.worker_batch_size),
                lease_s=self.settings.lease_ttl_s,
            )
            # Webhooks due for a try take the room left, in the same transaction.
            spare = min(room - len(claims), self.settings.worker_batch_size)
            deliveries = await claim_deliveries(self.runtime, session, spare) if spare > 0 else []
            await session.commit()
        observe_claims(claims)
        for claim in claims:
            self._start(self._run_step(claim), f"{claim.stage}:{claim.job_id}")
        for delivery in deliveries:
            self._start(self._deliver(delivery), f"webhook:{delivery.delivery_id}")
        return len(claims) + len(deliveries)

    def _start(self, step: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(step, name=name)
        self.inflight.add(task)
        task.add_done_callback(self._done)

    async def _deliver(self, claim: DeliveryClaim) -> None:
        try:
            await deliver(self.runtime, claim)
        except Exception:
            # The claim's lease runs out and the next claim tries again (same webhook-id).
            log.exception("webhook delivery failed", delivery=claim.delivery_id)

    def _maybe_sweep_retention(self) -> None:
        """Start the retention sweep when it is due (one at a time, in the background)."""
        if self.settings.retention_days is None:
            return
        if self._retention is not None and not self._retention.done():
            return
        if time.monotonic() - self._last_retention < self.settings.retention_sweep_interval_s:
            return
        self._last_retention = time.monotonic()
        self._retention = asyncio.create_task(self.sweep_retention(), name="retention")

    async def sweep_retention(self) -> int:
        try:
            return await sweep_expired_outputs(self.runtime)
        except Exception:
            log.exception("retention sweep failed")
            return 0

    async def reap(self) -> list[str]:
        self._last_reap = time.monotonic()
        async with self.runtime.sessions() as session:
            reaped = await reap_expired(
                session, submitting_grace_s=self.settings.submit_unknown_grace_s
            )
            await session.commit()
        if reaped:
            log.info("reaped expired leases", jobs=len(reaped))
        return reaped

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        self._room.set()

    async def _run_step(self, claim: Claim) -> None:
        structlog.contextvars.bind_contextvars(job_id=claim.job_id, worker=self.name)
        self.held[claim.job_id] = claim
        try:
            await STEPS[claim.stage](self.runtime, claim)
        except Exception:
            log.exception("worker step failed", stage=claim.stage.value)
            await self._hand_back(claim)
        finally:
            if self.held.get(claim.job_id) == claim:
                del self.held[claim.job_id]

    async def _hand_back(self, claim: Claim) -> None:
        """Release a failed step's lease (retrying while the database is away); if that never
        works, the lease expires and the reaper hands the job on."""
        for delay in (0.5, 1.0, 2.0, 4.0, 8.0):
            try:
                async with self.runtime.sessions() as session:
                    await release_after_failure(
                        session, claim, submitting_grace_s=self.settings.submit_unknown_grace_s
                    )
                    await session.commit()
                return
            except Exception as exc:
                log.info("lease hand-back failed", error=type(exc).__name__)
                await asyncio.sleep(delay)

    async def _drain(self, grace_s: float = 30.0) -> None:
        if not self.inflight:
            return
        log.info("waiting for steps in flight", count=len(self.inflight))
        _, pending = await asyncio.wait(self.inflight, timeout=grace_s)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
