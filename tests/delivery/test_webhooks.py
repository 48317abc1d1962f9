"""Client webhooks (Standard Webhooks): signed, retried with the same id, never redirected,
stopped by 410, written in the transition's transaction (a rollback announces nothing)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.db import db_now
from app.jobs import states
from app.jobs.repository import JobRepository
from app.kit.ids import new_job_id
from app.kit.timeutil import utcnow
from app.models import Job
from app.webhooks.outbox import enqueue
from tests.conftest import Gateway
from tests.delivery.helpers import deliveries, secret_of, settled, team_of
from tests.delivery.receiver import Answer, Receiver
from tests.helpers import body, new_key


def path() -> str:
    return f"/hook/{uuid.uuid4().hex[:10]}"


def verify(secret: str, received: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def test_completed_webhook_verifies_and_carries_the_job_with_signed_urls(
    hooks: Gateway, receiver: Receiver
) -> None:
    key = await new_key(hooks.runtime)
    client = hooks.client(key)
    hook = path()
    created = await client.create({**body(), "webhook": receiver.url(hook)})
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    [received] = await receiver.wait_for(hook, 1)
    secret = await secret_of(hooks.runtime, await team_of(hooks.runtime, key))
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    event = verify(secret, received)
    assert event["type"] == "image.completed"
    job = event["data"]
    fetched = (await client.get(job_id)).json()
    for field in ("job_id", "status", "stage", "input", "cost", "attempts", "completed_at"):
        assert job[field] == fetched[field], field
    assert job["status"] == "completed" and job["cached"] is False
    assert "_team" not in job and "_seq" not in job
    url = job["result"]["images"][0]["url"]
    assert url.startswith("http://gateway.test/v1/files/")
    image = await hooks.http.get(url.removeprefix("http://gateway.test"))
    assert image.status_code == 200 and len(image.content) == job["result"]["images"][0]["bytes"]
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["webhook-id"].startswith("msg_")
    [row] = await settled(hooks.runtime, job_id)
    assert (row.state, row.attempts, row.event) == ("delivered", 1, "completed")


async def test_the_reference_verifier_rejects_tampering_wrong_secret_stale_and_missing(
    hooks: Gateway, receiver: Receiver
) -> None:
    key = await new_key(hooks.runtime)
    hook = path()
    await hooks.client(key).create({**body(), "webhook": receiver.url(hook)})
    [received] = await receiver.wait_for(hook, 1)
    secret = await secret_of(hooks.runtime, await team_of(hooks.runtime, key))
    headers = received.headers
    verify(secret, received)  # the genuine message passes
    tampered = received.body.replace(b'"completed"', b'"failed"', 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(received.body, headers)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in headers.items() if k.lower() != name}
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(received.body, partial)
    # A replay ten minutes later, signed correctly for that old timestamp, is refused as stale.
    stale = datetime.now(UTC) - timedelta(minutes=10)
    signature = Webhook(secret).sign(headers["webhook-id"], stale, received.body.decode())
    replay = {**headers, "webhook-timestamp": str(int(stale.timestamp()))}
    replay["webhook-signature"] = signature
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(received.body, replay)


async def test_a_receiver_failing_three_times_gets_it_on_the_fourth_try_with_the_same_id(
    hooks: Gateway, receiver: Receiver
) -> None:
    key = await new_key(hooks.runtime)
    hook = path()
    receiver.script(hook, [Answer(500), Answer(503), Answer(500)])
    job_id = (await hooks.client(key).create({**body(), "webhook": receiver.url(hook)})).json()[
        "job_id"
    ]
    tries = await receiver.wait_for(hook, 4)
    [row] = await settled(hooks.runtime, job_id)
    assert len(receiver.at(hook)) == 4
    assert len({t.headers["webhook-id"] for t in tries}) == 1
    assert tries[0].headers["webhook-id"] == row.webhook_id
    secret = await secret_of(hooks.runtime, await team_of(hooks.runtime, key))
    assert all(verify(secret, t)["data"]["job_id"] == job_id for t in tries)
    assert (row.state, row.attempts, row.last_status) == ("delivered", 4, 200)
    history = row.history or []
    assert [h["status"] for h in history] == [500, 503, 500, 200]
    assert [h["attempt"] for h in history] == [1, 2, 3, 4]
    assert history[0]["error"] == "the receiver answered 500" and history[-1]["error"] is None


async def test_a_redirect_is_a_failure_and_is_never_followed(
    hooks: Gateway, receiver: Receiver
) -> None:
    key = await new_key(hooks.runtime)
    hook, target = path(), path()
    redirect = Answer(302, headers={"Location": receiver.url(target)})
    receiver.script(hook, [redirect] * 20)
    job_id = (await hooks.client(key).create({**body(), "webhook": receiver.url(hook)})).json()[
        "job_id"
    ]
    [row] = await settled(hooks.runtime, job_id)
    schedule = hooks.runtime.settings.webhook_retry_schedule_s
    assert (row.state, row.attempts) == ("failed", len(schedule) + 1)
    assert len(receiver.at(hook)) == len(schedule) + 1
    assert receiver.at(target) == []
    assert {h["status"] for h in row.history or []} == {302}
    assert "redirects are not followed" in (row.last_error or "")


async def test_410_stops_delivery_to_that_url_for_the_job(
    hooks: Gateway, receiver: Receiver
) -> None:
    key = await new_key(hooks.runtime)
    hook = path()
    receiver.script(hook, [Answer(410)])
    job_id = (await hooks.client(key).create({**body(), "webhook": receiver.url(hook)})).json()[
        "job_id"
    ]
    [row] = await settled(hooks.runtime, job_id)
    assert (row.state, row.attempts, row.last_status) == ("gone", 1, 410)
    await asyncio.sleep(0.5)  # ten retry intervals: nothing more is sent
    assert len(receiver.at(hook)) == 1
    async with hooks.runtime.sessions() as session:  # later events of the job are not queued
        job = await JobRepository(session).get(job_id)
        assert job is not None
        job.webhook_events = ["failed", "completed"]
        assert await enqueue(session, job, "failed") is None


async def _parked_job(gateway: Gateway, key: str, url: str) -> str:
    """A queued job with a webhook that no worker will pick up (due in an hour)."""
    principal = await gateway.runtime.keys.verify(key)
    assert principal is not None
    now = utcnow()
    job = Job(
        id=new_job_id(),
        team_id=principal.team_id,
        api_key_id=principal.key_id,
        model="black-forest-labs/flux-2-dev",
        input={},
        request_hash="0" * 64,
        status="pending",
        stage="queued",
        route_plan=[],
        webhook_url=url,
        webhook_events=["completed", "failed", "cancelled"],
        created_at=now,
        updated_at=now,
    )
    async with gateway.runtime.sessions() as session:
        await JobRepository(session).insert(job)
        await session.flush()
        await session.execute(
            update(Job).where(Job.id == job.id).values(next_action_at=cast(Any, db_now(3600)))
        )
        await session.commit()
    return job.id


async def test_a_rolled_back_transition_delivers_nothing_and_a_committed_one_does(
    hooks: Gateway, receiver: Receiver
) -> None:
    key = await new_key(hooks.runtime)
    hook = path()
    job_id = await _parked_job(hooks, key, receiver.url(hook))
    async with hooks.runtime.sessions() as session:
        moved = await JobRepository(session).transition(
            job_id, states.QUEUED, states.CANCELLED, epoch=None
        )
        assert moved
        await session.flush()
        assert len(await deliveries_in(session, job_id)) == 1  # written in the transaction...
        await session.rollback()  # ...and gone with it
    assert await deliveries(hooks.runtime, job_id) == []
    await asyncio.sleep(0.3)  # several worker ticks
    assert receiver.at(hook) == []
    async with hooks.runtime.sessions() as session:
        await JobRepository(session).transition(job_id, states.QUEUED, states.CANCELLED, epoch=None)
        await session.commit()
    [received] = await receiver.wait_for(hook, 1)
    assert orjson.loads(received.body)["type"] == "image.cancelled"


async def deliveries_in(session: Any, job_id: str) -> list[Any]:
    from app.webhooks.repository import DeliveryRepository

    return list(await DeliveryRepository(session).for_job(job_id))


async def test_processing_is_sent_once_when_subscribed_and_events_are_filtered(
    hooks: Gateway, receiver: Receiver
) -> None:
    key = await new_key(hooks.runtime)
    hook = path()
    payload = {**body(), "webhook": receiver.url(hook), "webhook_events": ["processing"]}
    job_id = (await hooks.client(key).create(payload)).json()["job_id"]
    await hooks.client(key).wait(job_id)
    [row] = await settled(hooks.runtime, job_id)
    assert row.event == "processing"
    [received] = receiver.at(hook)
    event = orjson.loads(received.body)
    assert event["type"] == "image.processing" and event["data"]["status"] == "processing"
