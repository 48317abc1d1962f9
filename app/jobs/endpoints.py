"""``/v1/images``: create, get, list and cancel image jobs. Thin: parse, authorise, call, answer."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from app.auth.dependencies import ImagesReader, ImagesWriter
from app.errors import NotFound, invalid
from app.jobs import service
from app.jobs.events import JobWatch
from app.jobs.publish import job_channel, load_document, publish, publish_document
from app.jobs.repository import JobFilters, JobRepository
from app.jobs.schemas import PRINTABLE, CreateImageJob, JobList, JobOut, Rfc3339
from app.jobs.states import Stage
from app.jobs.views import job_document, render
from app.web.deps import RuntimeDep, SessionDep, base_url

router = APIRouter(prefix="/v1/images", tags=["images"])

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:=(\d+))?", re.IGNORECASE)
MAX_WAIT_S = 60


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _prefer_wait(prefer: str | None) -> int | None:
    if not prefer:
        return None
    match = _PREFER_WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1) or MAX_WAIT_S), MAX_WAIT_S)


async def _await_terminal(
    runtime: RuntimeDep, document: dict[str, Any], seconds: int
) -> dict[str, Any]:
    """Hold until the job's own transition says it is terminal, or ``seconds`` pass.

    The wake-up is armed before each read of the job, so a transition committing in between
    still wakes us; the 5-second timer only bounds a lost signal (Redis down).
    """
    deadline = time.monotonic() + seconds
    job_id = document["job_id"]
    async with JobWatch(runtime.signals, job_channel(job_id)) as watch:
        document = await load_document(runtime, job_id) or document
        while document["stage"] != Stage.DONE:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if await watch.wait(min(remaining, 5.0)):
                await watch.arm()
            document = await load_document(runtime, job_id) or document
    return document


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={200: {"model": JobOut, "description": "finished while waiting (Prefer: wait)"}},
)
async def create_image_job(
    body: CreateImageJob,
    request: Request,
    principal: ImagesWriter,
    runtime: RuntimeDep,
    session: SessionDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Create an image job; it runs in the background on the cheapest healthy upstream.

    ``Idempotency-Key`` (IETF draft semantics): scoped to the API key; a repeat with the same
    body answers with the original job (no new submission, no new charge), another body is a
    422 ``idempotency_key_reused``. Keys live as long as their job (at least 24 hours).
    ``Prefer: wait=N`` (N <= 60) holds the answer until the job is terminal (200) or N seconds
    have passed (202).
    """
    if idempotency_key is not None and not idempotency_key.strip():
        raise invalid(["header", "Idempotency-Key"], "must not be blank")
    admission = await service.create_job(runtime, session, principal, body, idempotency_key)
    await session.commit()
    job = admission.job
    document = job_document(job, [] if admission.created else await _attempts(session, job.id))
    if admission.created:
        await publish_document(runtime, document, wake_workers=True)
    wait = _prefer_wait(prefer)
    headers = {"Location": f"/v1/images/{job.id}"}
    status = 202
    if wait is not None:
        document = await _await_terminal(runtime, document, wait)
        headers["Preference-Applied"] = f"wait={wait}"
        if document["stage"] == Stage.DONE:
            status = 200
    return _json(render(document, runtime.signer, base_url(request, runtime)), status, headers)


async def _attempts(session: SessionDep, job_id: str) -> list[Any]:
    return list(await JobRepository(session).attempts(job_id))


@router.get("/{job_id}", response_model=JobOut)
async def get_image_job(
    job_id: str, request: Request, principal: ImagesReader, runtime: RuntimeDep
) -> Response:
    """One job, with signed URLs for its images. Another team's job is a 404."""
    document = await load_document(runtime, job_id)
    if document is None or not service.visible(document, principal):
        raise NotFound(f"no job {job_id}")
    return _json(render(document, runtime.signer, base_url(request, runtime)))


def _cursor(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(value.encode() + b"==").decode()
    except (ValueError, UnicodeDecodeError):
        raise invalid(["query", "cursor"], "is not a cursor this API returned") from None
    if not decoded.startswith("img_"):
        raise invalid(["query", "cursor"], "is not a cursor this API returned")
    return decoded


@router.get("", response_model=JobList)
async def list_image_jobs(
    request: Request,
    principal: ImagesReader,
    runtime: RuntimeDep,
    session: SessionDep,
    status: Annotated[
        str | None, Query(pattern="^(pending|processing|completed|failed|cancelled)$")
    ] = None,
    provider: Annotated[str | None, Query(max_length=50, pattern=PRINTABLE)] = None,
    model: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE)] = None,
    created_after: Rfc3339 | None = None,
    created_before: Rfc3339 | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE)] = None,
) -> Response:
    """The team's jobs, newest first, with cursor pagination."""
    model_id = runtime.catalog.resolve(model) or model if model else None
    filters = JobFilters(status, provider, model_id, created_after, created_before)
    repo = JobRepository(session)
    scope = None if "admin" in principal.scopes else principal.team_id
    jobs = await repo.list(scope, filters, limit + 1, _cursor(cursor))
    page, more = jobs[:limit], len(jobs) > limit
    attempts = await repo.attempts_for([j.id for j in page])
    root = base_url(request, runtime)
    data = [render(job_document(j, attempts[j.id]), runtime.signer, root) for j in page]
    next_cursor = base64.urlsafe_b64encode(page[-1].id.encode()).decode() if more else None
    return _json({"data": data, "next_cursor": next_cursor})


@router.delete("/{job_id}", response_model=JobOut)
async def cancel_image_job(
    job_id: str,
    request: Request,
    principal: ImagesWriter,
    runtime: RuntimeDep,
    session: SessionDep,
) -> Response:
    """Cancel a job. At an upstream, its cancel is called where it has one."""
    cancellation = await service.cancel_job(session, principal, job_id)
    await session.commit()
    attempts = await JobRepository(session).attempts(job_id)
    await publish(runtime, cancellation.job, attempts)
    # Fire and forget: the answer does not wait for the upstream, which may be slow.
    task = asyncio.create_task(service.cancel_upstream(runtime, cancellation))
    _background.add(task)
    task.add_done_callback(_background.discard)
    document = job_document(cancellation.job, attempts)
    return _json(render(document, runtime.signer, base_url(request, runtime)))


_background: set[asyncio.Task[None]] = set()
