"""Retention: delete output files older than ``retention_days`` and make their jobs say so.

The sweep works in batches, each one transaction: lock a batch of live outputs past retention
(``SKIP LOCKED``, so workers share the work), delete their files from storage (idempotent: a
crash before the commit only deletes again), mark the outputs deleted and rewrite the result of
every job showing them (the job itself and any job that reused its images): each image loses its
storage key, gains ``"expired": true`` and its URL becomes null, and the result gets
``expired_at``. Then the jobs' cached documents are refreshed.
"""

from __future__ import annotations

from typing import Any

from app.jobs.publish import publish_by_id
from app.kit.timeutil import rfc3339, utcnow
from app.runtime import Runtime
from app.storage.repository import RetentionRepository
from app.worker.context import log

BATCH = 200


def expired_result(result: dict[str, Any] | None, when: str) -> dict[str, Any] | None:
    """The job's result with its images marked expired (idempotent)."""
    if not result:
        return result
    images = [
        {**{k: v for k, v in image.items() if k != "storage_key"}, "expired": True}
        for image in result.get("images") or []
    ]
    return {**result, "images": images, "expired_at": result.get("expired_at") or when}


async def sweep_expired_outputs(runtime: Runtime, *, batch: int = BATCH) -> int:
    """Run the sweep to the end; returns how many output files were deleted."""
    days = runtime.settings.retention_days
    if days is None:
        return 0
    deleted = 0
    while True:
        count, job_ids = await _sweep_batch(runtime, days * 86_400, batch)
        for job_id in job_ids:
            await publish_by_id(runtime, job_id)
        deleted += count
        if count < batch:
            break
    if deleted:
        log.info("retention deleted outputs", files=deleted, days=days)
    return deleted


async def _sweep_batch(runtime: Runtime, older_than_s: float, batch: int) -> tuple[int, set[str]]:
    async with runtime.sessions() as session:
        repo = RetentionRepository(session)
        outputs = await repo.claim_expired_outputs(older_than_s=older_than_s, limit=batch)
        if not outputs:
            return 0, set()
        for key in {output.storage_key for output in outputs}:
            await runtime.storage.delete(key)
        now = utcnow()
        await repo.mark_deleted([output.id for output in outputs], now)
        jobs = await repo.jobs_showing({output.job_id for output in outputs})
        stamp = rfc3339(now) or ""
        for job in jobs:
            job.result = expired_result(job.result, stamp)
        await session.commit()
    return len(outputs), {job.id for job in jobs}
