"""Job admission, reading and cancelling. Services never commit: the endpoint does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import Principal
from app.budgets import service as budgets
from app.errors import ApiError, Conflict, NotCancellable, invalid
from app.jobs import states
from app.jobs.input_images import with_input_image_size
from app.jobs.normalise import NormalisedInput, normalise
from app.jobs.repository import JobRepository
from app.jobs.reuse import record_reuse, reusable_job, reuse_key, reuse_result
from app.jobs.schemas import CreateImageJob
from app.kit.ids import new_job_id
from app.kit.timeutil import utcnow
from app.metrics.jobs import job_admitted
from app.models import Attempt, Job
from app.providers.base import Cancellable, UpstreamRef, UpstreamRequest
from app.routing.admission import plan_for
from app.runtime import Runtime
from app.webhooks.validation import check_webhook_url

log = structlog.get_logger(__name__)

TERMINAL_WEBHOOK_EVENTS = ["completed", "failed", "cancelled"]


class IdempotencyKeyReused(ApiError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"


class IdempotencyInProgress(Conflict):
    code, title = "idempotency_in_progress", "A request with this key is in progress"


@dataclass(frozen=True, slots=True)
class Admission:
    job: Job
    created: bool  # False when an idempotent repeat returned the original job


def request_hash(body: CreateImageJob) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


async def create_job(
    runtime: Runtime,
    session: AsyncSession,
    principal: Principal,
    body: CreateImageJob,
    idempotency_key: str | None,
) -> Admission:
    model_id = runtime.catalog.resolve(body.model)
    if model_id is None:
        known = ", ".join(runtime.catalog.known())
        raise invalid(["model"], f"unknown model {body.model!r}; known models: {known}")
    digest = request_hash(body)
    # Checks that may wait on the network (DNS, an input image) come before the first query: on
    # SQLite a transaction holds the write lock from its first statement until it ends.
    request = await with_input_image_size(runtime, normalise(body.input))
    await check_webhook_url(runtime, body.webhook)
    deadline_s = _deadline_s(runtime, body)
    repo = JobRepository(session)
    if idempotency_key is not None:
        existing = await repo.get_by_idempotency_key(principal.key_id, idempotency_key)
        if existing is not None:
            return _repeat(existing, digest)
    source = await reusable_job(runtime, session, principal, model_id, request, body)
    plan = None if source is not None else await plan_for(runtime, model_id, body, request)
    now = utcnow()
    job = Job(
        id=new_job_id(),
        team_id=principal.team_id,
        api_key_id=principal.key_id,
        model=model_id,
        input=request.to_json(),
        request_hash=digest,
        idempotency_key=idempotency_key,
        status=states.QUEUED.status.value,
        stage=states.QUEUED.stage.value,
        route_plan=[c.to_json() for c in plan.candidates] if plan else [],
        allow_fallbacks=body.routing.allow_fallbacks,
        estimated_cost_micros=plan.candidates[0].estimate_micros if plan else 0,
        webhook_url=body.webhook,
        webhook_events=body.webhook_events or (TERMINAL_WEBHOOK_EVENTS if body.webhook else None),
        meta=body.metadata,
        created_at=now,
        updated_at=now,
        deadline_at=now + timedelta(seconds=deadline_s),
        lease_epoch=0,
        attempt_count=0,
        poll_errors=0,
        cancel_requested=False,
        reuse_key=reuse_key(model_id, request),
    )
    if source is not None:
        reuse_result(job, source)

    async def admit() -> None:
        if source is not None:  # completed at once, nothing to reserve or run
            await repo.insert(job, {"cached_from": job.reused_from})
            await record_reuse(session, job)
            return
        detail = {"routing": body.routing.strategy}
        if await repo.insert_unless_budgeted(job, detail, budgets.hold(job)):
            job_admitted(session.sync_session, job)
            return
        await repo.insert(job, detail)
        await budgets.reserve(session, principal, job)

    if idempotency_key is None:
        await admit()
        return Admission(job, created=True)
    try:
        async with session.begin_nested():
            await admit()
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its job.
        existing = await repo.get_by_idempotency_key(principal.key_id, idempotency_key)
        if existing is None:
            raise IdempotencyInProgress(
                "a request with this Idempotency-Key is still being processed; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        return _repeat(existing, digest)
    return Admission(job, created=True)


def _deadline_s(runtime: Runtime, body: CreateImageJob) -> float:
    """The request's deadline, or the operator's default; never beyond the operator's cap."""
    settings = runtime.settings
    if body.deadline_s is None:
        return min(settings.job_deadline_s, settings.job_deadline_max_s)
    if body.deadline_s > settings.job_deadline_max_s:
        limit = f"{settings.job_deadline_max_s:g}"
        raise invalid(["deadline_s"], f"must be at most {limit} seconds on this gateway")
    return float(body.deadline_s)


def _repeat(existing: Job, digest: str) -> Admission:
    if existing.request_hash != digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request body",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": "reused with another body"}],
        )
    return Admission(existing, created=False)


@dataclass(frozen=True, slots=True)
class Cancellation:
    job: Job
    upstream: UpstreamRef | None  # an upstream job to cancel once the commit is done
    provider: str | None


async def cancel_job(session: AsyncSession, principal: Principal, job_id: str) -> Cancellation:
    repo = JobRepository(session)
    for _ in range(3):  # the worker may move the job between our read and our write
        job = await repo.get(job_id, team_id=_team_scope(principal))
        if job is None:
            raise _not_found(job_id)
        current = states.state_of(job.status, job.stage)
        if current.is_terminal:
            raise NotCancellable(f"job {job_id} is already {job.status}")
        moved = await repo.transition(
            job_id,
            current,
            states.CANCELLED,
            epoch=None,
            # Bumping the epoch fences out a worker holding the lease: its writes match 0 rows.
            values={"lease_epoch": job.lease_epoch + 1, "cancel_requested": True},
            detail={"reason": "cancelled by client"},
        )
        if not moved:
            await session.rollback()
            continue
        upstream = await _upstream_to_cancel(repo, job, current)
        refreshed = await repo.get(job_id)
        assert refreshed is not None
        return Cancellation(refreshed, upstream, job.provider)
    raise Conflict(f"job {job_id} is changing too fast to cancel; retry")


async def _upstream_to_cancel(
    repo: JobRepository, job: Job, current: states.JobState
) -> UpstreamRef | None:
    if current not in states.AT_UPSTREAM:
        return None
    attempts = await repo.attempts(job.id)
    live = next((a for a in reversed(attempts) if a.finished_at is None), None)
    if live is None:
        return None
    live.state = "cancelled"
    live.finished_at = utcnow()
    if live.upstream_id is None:
        return None
    return attempt_ref(job, live)


def attempt_ref(job: Job, attempt: Attempt) -> UpstreamRef:
    request = NormalisedInput.from_json(job.input)
    upstream = UpstreamRequest(
        job_id=job.id,
        model=attempt.upstream_model,
        prompt=request.prompt,
        width=request.width,
        height=request.height,
        aspect_ratio=request.aspect_ratio,
        input_images=request.input_images,
        seed=request.seed,
        output_format=request.output_format,
        output_quality=request.output_quality,
        go_fast=request.go_fast,
        disable_safety_checker=request.disable_safety_checker,
        num_outputs=request.num_outputs,
        loras=request.loras,
    )
    submitted = attempt.submitted_at.timestamp() if attempt.submitted_at else 0.0
    return UpstreamRef(attempt.upstream_id or "", upstream, attempt.handle or {}, submitted)


async def cancel_upstream(runtime: Runtime, cancellation: Cancellation) -> None:
    """Best effort, after the commit: the job is already cancelled at imagegate either way."""
    if cancellation.upstream is None or cancellation.provider is None:
        return
    provider: object = runtime.providers.get(cancellation.provider)
    if not isinstance(provider, Cancellable):
        return  # no upstream cancel (e.g. Novita): a late result is ignored
    try:
        await provider.cancel(cancellation.upstream)
    except Exception as exc:
        log.warning("upstream cancel failed", provider=cancellation.provider, error=str(exc))


def _team_scope(principal: Principal) -> str | None:
    return None if "admin" in principal.scopes else principal.team_id


def _not_found(job_id: str) -> ApiError:
    from app.errors import NotFound

    return NotFound(f"no job {job_id}")


def visible(document: dict[str, Any], principal: Principal) -> bool:
    return "admin" in principal.scopes or document.get("_team") == principal.team_id
