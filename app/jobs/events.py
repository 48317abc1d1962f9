"""``GET /v1/images/{job_id}/events``: Server-Sent Events of a job's transitions.

One ``status`` event per ``job_events`` row, in order: ``id`` is the row's sequence number and
``data`` the job's public ``status`` and ``stage`` after that transition, with its ``detail``.
A reconnecting client sends ``Last-Event-ID`` and gets exactly the events after it; the stream
closes after the terminal event (at once when the client has already seen it).

The stream does not poll: it sleeps on the job's signal channel (``job:{id}``, which every
commit that changes the job notifies, across processes through Redis pub/sub) and reads the job
store when woken. ``JobWatch`` arms the wake-up *before* each read, so a transition that commits
between the read and the sleep still wakes it. While the signals are not live (Redis down, or
the subscription not yet confirmed) a wake-up can be lost, so the stream re-reads every
``OFFLINE_RECHECK_S`` instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from app.auth.dependencies import ImagesReader
from app.cache import Signals
from app.errors import NotFound, invalid
from app.jobs import service
from app.jobs.publish import job_channel, load_document
from app.jobs.repository import JobRepository
from app.jobs.states import Stage
from app.kit.timeutil import rfc3339
from app.models import JobEvent
from app.runtime import Runtime
from app.web.deps import RuntimeDep

router = APIRouter(prefix="/v1/images", tags=["images"])

PAGE = 100
RECONNECT_MS = 1000
OFFLINE_RECHECK_S = 1.0

# One event of the stream, as OpenAPI 3.1 describes a text/event-stream item: ``data`` is the JSON
# of the transition (``status_event`` writes it).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"const": "status"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "retry": {"type": "integer", "minimum": 0},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["job_id", "seq", "status", "stage", "detail", "at"],
                "properties": {
                    "job_id": {"type": "string"},
                    "seq": {"type": "integer", "minimum": 1},
                    "status": {
                        "enum": ["pending", "processing", "completed", "failed", "cancelled"]
                    },
                    "stage": {"type": "string"},
                    "detail": {"type": ["object", "null"]},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}


class JobWatch:
    """Wake-ups on one channel, armed before the caller reads, so none falls in between.

    ``arm()`` starts listening; ``wait(t)`` returns True when a signal came (the watch must be
    armed again before the next read) or False after ``t`` seconds (it stays armed).
    """

    def __init__(self, signals: Signals, channel: str, horizon_s: float = 3600.0) -> None:
        self._signals = signals
        self._channel = channel
        self._horizon = horizon_s
        self._task: asyncio.Task[bool] | None = None

    async def arm(self) -> None:
        self.close()
        self._task = asyncio.create_task(self._signals.wait(self._channel, self._horizon))
        await asyncio.sleep(0)  # let the waiter register before the caller reads

    async def wait(self, timeout: float) -> bool:
        """Wait for a signal. While the signals are not live (Redis unreachable, or still
        subscribing) a wake-up may be lost, so it returns True after at most ``OFFLINE_RECHECK_S``
        to make the caller read again."""
        if self._task is None:
            await self.arm()
        assert self._task is not None
        if not self._signals.live and timeout > OFFLINE_RECHECK_S:
            await asyncio.wait({self._task}, timeout=OFFLINE_RECHECK_S)
            self.close()
            return True
        done, _ = await asyncio.wait({self._task}, timeout=max(0.0, timeout))
        if not done:
            return False
        self._task = None
        return True

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def __aenter__(self) -> JobWatch:
        await self.arm()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()


def _last_event_id(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    try:
        seq = int(value.strip())
    except ValueError:
        raise invalid(["header", "Last-Event-ID"], "must be an event id this stream sent") from None
    if not 0 <= seq < 2**31:
        raise invalid(["header", "Last-Event-ID"], "must be an event id this stream sent")
    return seq


def status_event(job_id: str, event: JobEvent) -> bytes:
    data: dict[str, Any] = {
        "job_id": job_id,
        "seq": event.seq,
        "status": event.status,
        "stage": event.stage,
        "detail": event.detail,
        "at": rfc3339(event.created_at),
    }
    return b"id: %d\nevent: status\ndata: %s\n\n" % (event.seq, orjson.dumps(data))


async def job_events(runtime: Runtime, job_id: str, after: int) -> AsyncIterator[bytes]:
    """The SSE byte stream of ``job_id``'s transitions after ``after``."""
    yield b"retry: %d\n\n" % RECONNECT_MS
    keepalive = runtime.settings.sse_keepalive_s
    last = after
    wrote_at = time.monotonic()
    async with JobWatch(runtime.signals, job_channel(job_id)) as watch:
        while True:
            async with runtime.sessions() as session:
                events = await JobRepository(session).events_after(job_id, last, PAGE)
            for event in events:
                last = event.seq
                yield status_event(job_id, event)
                if event.stage == Stage.DONE:
                    return
            if events:
                wrote_at = time.monotonic()
            if len(events) == PAGE:
                continue
            if not events:
                document = await load_document(runtime, job_id)
                if document is None:
                    return
                if document["stage"] == Stage.DONE and int(document["_seq"]) <= last:
                    return  # the client already has the terminal event
            if await watch.wait(keepalive):
                await watch.arm()
            if time.monotonic() - wrote_at >= keepalive:
                yield b": keep-alive\n\n"
                wrote_at = time.monotonic()


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "one `status` event per transition; closes after the terminal one",
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        }
    },
)
async def stream_job_events(
    job_id: str,
    principal: ImagesReader,
    runtime: RuntimeDep,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Server-Sent Events of the job's transitions, resumable with ``Last-Event-ID``."""
    after = _last_event_id(last_event_id)
    document = await load_document(runtime, job_id)
    if document is None or not service.visible(document, principal):
        raise NotFound(f"no job {job_id}")
    return StreamingResponse(
        job_events(runtime, job_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["JobWatch", "job_events", "router", "status_event"]
