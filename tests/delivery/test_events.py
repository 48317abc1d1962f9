"""``GET /v1/images/{id}/events``: every transition in order, resumable, across API processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.jobs.repository import JobRepository
from app.runtime import Runtime
from tests.conftest import SECRET, Backend, Gateway
from tests.delivery.conftest import running
from tests.helpers import body, new_key
from tests.procs import processes

SLOW_SIMULATOR = {"latency_s": 0.4, "latency_jitter": 0.0}


async def read_events(response: httpx.Response, limit: int | None = None) -> list[dict[str, Any]]:
    """Parse a text/event-stream until it ends (or ``limit`` events arrived)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in current:
                current["data"] = orjson.loads(current["data"])
                events.append(current)
                if limit is not None and len(events) >= limit:
                    break
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")
    return events


async def stream(
    base: str, key: str, job_id: str, last_event_id: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with (
        httpx.AsyncClient(base_url=base, timeout=20) as http,
        http.stream("GET", f"/v1/images/{job_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return await asyncio.wait_for(read_events(response, limit), 20)


async def recorded(runtime: Runtime, job_id: str) -> list[tuple[int, str, str]]:
    async with runtime.sessions() as session:
        rows = await JobRepository(session).events_after(job_id, 0)
    return [(row.seq, row.status, row.stage) for row in rows]


def summary(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    for event in events:
        assert event["event"] == "status" and int(event["id"]) == event["data"]["seq"]
    return [(e["data"]["seq"], e["data"]["status"], e["data"]["stage"]) for e in events]


async def test_a_client_sees_every_transition_in_order_and_resumes_without_gaps(
    isolated: Backend, tmp_path: Path
) -> None:
    async with running(isolated, tmp_path, served=True, simulator=SLOW_SIMULATOR) as gateway:
        base = gateway.runtime.settings.public_base_url
        assert base is not None
        key = await new_key(gateway.runtime)
        job_id = (await gateway.client(key).create(body())).json()["job_id"]
        first = await stream(base, key, job_id, limit=2)  # then the client drops
        rest = await stream(base, key, job_id, last_event_id=first[-1]["id"])
        seen = summary(first + rest)
        assert seen == await recorded(gateway.runtime, job_id)
        assert [seq for seq, _, _ in seen] == list(range(1, len(seen) + 1))
        assert seen[0][1:] == ("pending", "queued") and seen[-1][1:] == ("completed", "done")
        assert ("processing", "finalizing") in [s[1:] for s in seen]
        assert rest[-1]["data"]["detail"] == {"images": 1}
        # Reconnecting after the terminal event: nothing more, the stream ends at once.
        assert await stream(base, key, job_id, last_event_id=rest[-1]["id"]) == []
        # From the start again: the same history.
        assert summary(await stream(base, key, job_id)) == seen


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_the_stream_works_from_an_api_process_that_did_not_create_the_job(
    isolated: Backend, tmp_path: Path
) -> None:
    """The in-process gateway (API + worker) creates and runs the job; a separate ``imagegate
    api`` process on the same PostgreSQL and Redis serves the stream, woken through Redis
    pub/sub: its keep-alive is an hour away, so only the signals can deliver the events in time."""
    assert isolated.database_url is not None and isolated.redis_url is not None
    env = {
        "IMAGEGATE_DATABASE_URL": isolated.database_url,
        "IMAGEGATE_REDIS_URL": isolated.redis_url,
        "IMAGEGATE_REDIS_PREFIX": isolated.redis_prefix,
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "streamer"),
        "IMAGEGATE_LOG_LEVEL": "warning",
        "IMAGEGATE_SSE_KEEPALIVE_S": "3600",
    }
    async with running(isolated, tmp_path / "creator", simulator=SLOW_SIMULATOR) as creator:
        with processes(env, tmp_path) as group:
            base = await asyncio.to_thread(group.api, "streamer")
            key = await new_key(creator.runtime)
            job_id = (await creator.client(key).create(body())).json()["job_id"]
            seen = summary(await stream(base, key, job_id))
            assert seen == await recorded(creator.runtime, job_id), group.log_tail("streamer")
            assert seen[-1][1:] == ("completed", "done") and len(seen) >= 5


async def test_events_are_team_scoped_and_need_images_read(gateway: Gateway) -> None:
    alice = gateway.client(await new_key(gateway.runtime))
    bob = gateway.client(await new_key(gateway.runtime))
    job_id = (await alice.create(body())).json()["job_id"]
    await alice.wait(job_id)
    path = f"/v1/images/{job_id}/events"
    assert (await gateway.http.get(path, headers=bob.headers)).status_code == 404
    assert (await gateway.http.get(path)).status_code == 401
    writer = await new_key(gateway.runtime, scopes=["images:write"])
    denied = await gateway.http.get(path, headers={"Authorization": f"Bearer {writer}"})
    assert denied.status_code == 403
    bad = await gateway.http.get(path, headers={**alice.headers, "Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["header", "Last-Event-ID"]
    done = await gateway.http.get(path, headers=alice.headers)  # a finished job: whole history
    assert done.status_code == 200 and done.text.rstrip().endswith("}")
    assert '"stage":"done"' in done.text.rstrip().splitlines()[-1]
