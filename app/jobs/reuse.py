"""Opt-in result reuse: a seeded request identical to a completed job of the same team.

A request reuses stored images when all of these hold:
- it opts in: ``"cache": true``, or the operator's ``reuse_results_default`` and no
  ``"cache": false``;
- it has an explicit seed (no seed, or ``-1``, asks for a new random picture: never reused);
- a completed job of the same team has the same model and the same normalised input (every
  field: prompt, size, seed, format, quality, outputs, loras, input images), and its files have
  not expired.

The answer is a new job, completed at once at zero cost, ``"cached": true``, whose result points
at the same stored files (their retention is the original's). Failed and cancelled jobs are
never sources: only a completed job has a reuse result.
"""

from __future__ import annotations

import hashlib

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import Principal
from app.jobs import states
from app.jobs.normalise import NormalisedInput
from app.jobs.repository import JobRepository
from app.jobs.schemas import CreateImageJob
from app.models import Job
from app.runtime import Runtime
from app.webhooks.outbox import enqueue


def reuse_key(model_id: str, request: NormalisedInput) -> str | None:
    """The digest two requests share when one may reuse the other's images (seeded only)."""
    if request.seed is None:
        return None
    canonical = orjson.dumps(
        {"model": model_id, "input": request.to_json()}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


def wants_reuse(runtime: Runtime, body: CreateImageJob) -> bool:
    return body.cache if body.cache is not None else runtime.settings.reuse_results_default


async def reusable_job(
    runtime: Runtime,
    session: AsyncSession,
    principal: Principal,
    model_id: str,
    request: NormalisedInput,
    body: CreateImageJob,
) -> Job | None:
    """A completed job whose stored images this request may reuse at zero cost, if any."""
    key = reuse_key(model_id, request)
    if key is None or not wants_reuse(runtime, body):
        return None
    for job in await JobRepository(session).completed_by_reuse_key(principal.team_id, key):
        result = job.result or {}
        if result.get("images") and not result.get("expired_at"):
            return job
    return None


def reuse_result(job: Job, source: Job) -> None:
    """Make the new ``job`` a completed copy of ``source``'s result, at zero cost."""
    job.status = states.COMPLETED.status.value
    job.stage = states.COMPLETED.stage.value
    job.provider = source.provider
    job.result = dict(source.result or {})
    job.route_plan = []
    job.estimated_cost_micros = 0
    job.actual_cost_micros = 0
    job.started_at = job.completed_at = job.created_at
    job.deadline_at = None
    job.reused_from = source.reused_from or source.id  # always the job that owns the files


async def record_reuse(session: AsyncSession, job: Job) -> None:
    """After the insert: nothing is due for the worker; the webhook announces the result."""
    job.next_action_at = None
    await enqueue(session, job, states.Status.COMPLETED.value)
