"""``/metrics`` details: counts follow commits, the token, OpenMetrics, a dead job store, and
the worker process's own metrics port."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import create_sessionmaker
from app.jobs import states
from app.jobs.repository import JobRepository
from app.kit.ids import new_job_id
from app.kit.timeutil import utcnow
from app.metrics.upstream import labels_for
from app.models import Job
from tests.conftest import SECRET, Backend, Gateway, start_gateway
from tests.helpers import new_key
from tests.metrics.support import parse, scrape
from tests.procs import free_port, processes, wait_ready

MODEL = "black-forest-labs/flux-2-dev"


def parked_job(team_id: str, provider: str) -> Job:
    """A queued job no worker will claim (nothing is due), labelled by ``provider``."""
    now = utcnow()
    return Job(
        id=new_job_id(),
        team_id=team_id,
        model=MODEL,
        input={},
        request_hash="0" * 64,
        status="pending",
        stage="queued",
        provider=provider,
        route_plan=[{"provider": provider, "upstream_model": "x", "estimate_micros": 1}],
        created_at=now,
        updated_at=now,
        lease_epoch=0,
        event_seq=0,
        next_action_at=None,
    )


async def test_job_counts_wait_for_the_commit_and_vanish_with_a_rollback(
    gateway: Gateway,
) -> None:
    principal = await gateway.runtime.keys.verify(await new_key(gateway.runtime))
    assert principal is not None
    provider = f"rollback{uuid.uuid4().hex[:6]}"
    created = "imagegate_jobs_created_total"
    finished = "imagegate_jobs_finished_total"
    sessions = gateway.runtime.sessions
    before = await scrape(gateway.http)

    async with sessions() as session:  # inserted, then the transaction rolls back
        session.add(parked_job(principal.team_id, provider))
        await session.flush()
        await session.rollback()
    async with sessions() as session:  # a savepoint rolls back, its transaction commits
        savepoint = await session.begin_nested()
        session.add(parked_job(principal.team_id, provider))
        await session.flush()
        await savepoint.rollback()
        await session.commit()
    async with sessions() as session:  # flushed is not committed
        job = parked_job(principal.team_id, provider)
        session.add(job)
        await session.flush()
        # Read the registry itself: a scrape would wait on SQLite's write lock we hold here.
        labels = {"provider": provider, "model": MODEL}
        assert REGISTRY.get_sample_value(created, labels) is None
        await session.commit()
    assert (await scrape(gateway.http) - before).value(created, provider=provider) == 1

    for commit in (False, True):
        async with sessions() as session:
            repo = JobRepository(session)
            assert await repo.transition(job.id, states.QUEUED, states.CANCELLED, epoch=None)
            await (session.commit() if commit else session.rollback())
        delta = await scrape(gateway.http) - before
        assert delta.value(finished, provider=provider, status="cancelled") == int(commit)


@pytest.fixture
async def quiet(backend: Backend, tmp_path: Path) -> Any:
    """A gateway with no worker and a metrics token."""
    async for gateway in start_gateway(
        backend, tmp_path, run_worker=False, metrics_token="scrape-" + "t" * 30
    ):
        yield gateway


async def test_the_token_guards_metrics_and_openmetrics_is_offered(quiet: Gateway) -> None:
    refused = await quiet.http.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    wrong = await quiet.http.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    auth = {"Authorization": "Bearer scrape-" + "t" * 30}
    samples = await scrape(quiet.http, **auth)
    assert samples.value("imagegate_provider_breaker_state", provider="simulator") == 0
    open_metrics = await quiet.http.get(
        "/metrics", headers={**auth, "Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")
    # Never in the public API description.
    assert "/metrics" not in (await quiet.http.get("/openapi.json")).json()["paths"]


async def test_a_scrape_answers_while_the_job_store_is_down(quiet: Gateway) -> None:
    auth = {"Authorization": "Bearer scrape-" + "t" * 30}
    runtime = quiet.runtime
    broken = create_async_engine("sqlite+aiosqlite:////nonexistent-dir/x.db")
    healthy = runtime.sessions
    runtime.sessions = create_sessionmaker(broken)
    try:
        before = await scrape(quiet.http, **auth)
        after = await scrape(quiet.http, **auth)
    finally:
        runtime.sessions = healthy
        await broken.dispose()
    assert after.labelsets("imagegate_jobs_in_flight") == []
    errors = "imagegate_metrics_refresh_errors_total"
    assert (after - before).value(errors, source="jobs_in_flight") == 1
    assert after.value("imagegate_provider_breaker_state", provider="simulator") == 0


def test_upstream_calls_are_labelled_by_provider_and_operation() -> None:
    assert labels_for("fal status", "poll") == ("fal", "poll")
    assert labels_for("replicate create", "submit") == ("replicate", "submit")
    assert labels_for("novita output", "poll") == ("novita", "fetch")
    assert labels_for("fal cancel", "cancel") == ("fal", "cancel")
    assert labels_for("", "poll") == ("unknown", "poll")


@pytest.mark.slow
async def test_a_worker_process_serves_its_metrics_on_its_own_port(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_LOG_LEVEL": "warning",
        "IMAGEGATE_WORKER_METRICS_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    with processes(env, tmp_path) as group:
        worker = group.start("worker", name="worker")
        await asyncio.to_thread(wait_ready, url)
        async with httpx.AsyncClient(base_url=url) as http:
            samples = parse((await http.get("/metrics")).text)
            assert (await http.get("/v1/images")).status_code == 404  # metrics only
        assert samples.value("imagegate_provider_breaker_state", provider="simulator") == 0
        assert samples.labelsets("process_resident_memory_bytes")
        group.stop_all()
        assert worker.returncode == 0, group.log_tail("worker")
