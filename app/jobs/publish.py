"""After a commit that changed a job: refresh its cached document and wake whoever waits on it.

Only ever called after the transaction committed, so nothing outside the process sees a state
that could still roll back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from app.cache import store_and_notify
from app.jobs.repository import JobRepository
from app.jobs.views import job_document
from app.models import Attempt, Job
from app.runtime import Runtime


def cache_key(job_id: str) -> str:
    return f"job:{job_id}"


def job_channel(job_id: str) -> str:
    return f"job:{job_id}"


WAKE_CHANNEL = "wake"  # the workers' channel: a job is due
LIVE_JOB_TTL_S = 5


def cache_ttl(runtime: Runtime, document: dict[str, Any]) -> int:
    """Finished jobs do not change: keep them long. A live job's entry expires quickly, which
    bounds how stale it can get if a process dies between its commit and its publish."""
    if document["stage"] == "done":
        return runtime.settings.job_cache_ttl_s
    return min(LIVE_JOB_TTL_S, runtime.settings.job_cache_ttl_s)


async def publish_document(
    runtime: Runtime, document: dict[str, Any], *, wake_workers: bool = False
) -> None:
    """Cache the document and wake its waiters (and, for a new job, the workers): one round
    trip to Redis for all of it."""
    job_id = document["job_id"]
    channels = [job_channel(job_id), WAKE_CHANNEL] if wake_workers else [job_channel(job_id)]
    await store_and_notify(
        runtime.cache,
        runtime.signals,
        cache_key(job_id),
        int(document["_seq"]),
        orjson.dumps(document),
        cache_ttl(runtime, document),
        channels,
    )


async def publish(runtime: Runtime, job: Job, attempts: Sequence[Attempt]) -> None:
    await publish_document(runtime, job_document(job, attempts))


async def publish_by_id(runtime: Runtime, job_id: str) -> None:
    """Re-read a job as committed and publish it (workers, after each transition)."""
    async with runtime.sessions() as session:
        repo = JobRepository(session)
        job = await repo.get(job_id)
        if job is None:
            return
        attempts = await repo.attempts(job_id)
    await publish(runtime, job, attempts)


async def load_document(runtime: Runtime, job_id: str) -> dict[str, Any] | None:
    """The job's document, from the cache when it has it, else from the database."""
    cached = await runtime.cache.get(cache_key(job_id))
    if cached is not None:
        document: dict[str, Any] = orjson.loads(cached)
        return document
    async with runtime.sessions() as session:
        repo = JobRepository(session)
        job = await repo.get(job_id)
        if job is None:
            return None
        attempts = await repo.attempts(job_id)
    document = job_document(job, attempts)
    await runtime.cache.set_versioned(
        cache_key(job_id), job.event_seq, orjson.dumps(document), cache_ttl(runtime, document)
    )
    return document
