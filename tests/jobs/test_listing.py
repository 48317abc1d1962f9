"""``GET /v1/images``: newest first, filters, cursor pagination, and a team sees only its jobs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.conftest import Gateway
from tests.helpers import TERMINAL, Client, body, new_key

MODEL = "black-forest-labs/flux-2-dev"


async def create_jobs(client: Client, count: int, **fields: Any) -> list[dict[str, Any]]:
    """``count`` jobs created one after another (a few ms apart, so creation order is known)."""
    jobs = []
    for index in range(count):
        response = await client.create(body(f"job {index}", **fields))
        assert response.status_code == 202, response.text
        jobs.append(response.json())
        await asyncio.sleep(0.003)
    return jobs


async def listing(client: Client, **params: Any) -> dict[str, Any]:
    response = await client.http.get("/v1/images", params=params, headers=client.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    page: dict[str, Any] = response.json()
    assert set(page) == {"data", "next_cursor"}
    return page


def ids(page: dict[str, Any]) -> list[str]:
    return [job["job_id"] for job in page["data"]]


async def test_newest_first_with_full_job_objects(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    created = await create_jobs(client, 4)
    page = await listing(client)
    assert ids(page) == [job["job_id"] for job in reversed(created)]
    assert page["next_cursor"] is None
    stamps = [job["created_at"] for job in page["data"]]
    assert stamps == sorted(stamps, reverse=True)
    for job in page["data"]:
        assert job["model"] == MODEL
        assert job["urls"]["get"] == f"/v1/images/{job['job_id']}"
        assert not [name for name in job if name.startswith("_")]  # no private fields leak
    # A listed job is the same object GET returns (same input, same creation time).
    one = (await client.get(created[0]["job_id"])).json()
    listed = next(job for job in page["data"] if job["job_id"] == created[0]["job_id"])
    assert (listed["input"], listed["created_at"]) == (one["input"], one["created_at"])


async def test_an_empty_team_lists_nothing(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    assert await listing(client) == {"data": [], "next_cursor": None}


async def test_cursor_pagination_has_no_duplicates_or_gaps(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    created = await create_jobs(client, 7)
    expected = [job["job_id"] for job in reversed(created)]
    pages: list[list[str]] = []
    cursor = None
    for _ in range(5):  # bounded: a cursor that never ends is a failure, not a hang
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = await listing(client, **params)
        pages.append(ids(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == expected
    assert cursor is None


async def test_exactly_one_full_page_has_no_next_cursor(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    created = await create_jobs(client, 3)
    page = await listing(client, limit=3)
    assert ids(page) == [job["job_id"] for job in reversed(created)]
    assert page["next_cursor"] is None
    first = await listing(client, limit=2)
    assert first["next_cursor"] is not None
    rest = await listing(client, limit=2, cursor=first["next_cursor"])
    assert ids(first) + ids(rest) == ids(page)
    assert rest["next_cursor"] is None


async def test_filters_combine_with_pagination(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    jobs = await create_jobs(client, 5)
    finished = [await client.wait(job["job_id"]) for job in jobs]
    expected = [job["job_id"] for job in reversed(finished) if job["status"] == "completed"]
    assert expected, finished
    first = await listing(client, status="completed", limit=2)
    seen = ids(first)
    cursor = first["next_cursor"]
    while cursor is not None:
        page = await listing(client, status="completed", limit=2, cursor=cursor)
        seen += ids(page)
        cursor = page["next_cursor"]
    assert seen == expected


async def test_status_and_provider_filters(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    jobs = await create_jobs(client, 4)
    # Cancel two at once; the simulator (50 ms) may win the race, so the truth is read back.
    for job in jobs[:2]:
        assert (await client.cancel(job["job_id"])).status_code in (200, 409)
    final = {job["job_id"]: await client.wait(job["job_id"]) for job in jobs}
    newest_first = [job["job_id"] for job in reversed(jobs)]
    for status in TERMINAL:
        page = await listing(client, status=status)
        assert ids(page) == [j for j in newest_first if final[j]["status"] == status], status
    assert {j["status"] for j in final.values()} >= {"completed"}
    assert (await listing(client, status="pending"))["data"] == []
    served = [j for j in newest_first if final[j]["provider"] == "simulator"]
    assert served, final
    assert ids(await listing(client, provider="simulator")) == served
    assert (await listing(client, provider="fal"))["data"] == []


async def test_model_filter_takes_the_id_or_an_alias(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    created = await create_jobs(client, 2)
    expected = [job["job_id"] for job in reversed(created)]
    for name in (MODEL, "flux-2-dev", "flux.2-dev"):
        assert ids(await listing(client, model=name)) == expected, name
    assert (await listing(client, model="acme/other-model"))["data"] == []


async def test_created_after_and_before(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    first, second, third = await create_jobs(client, 3)
    # created_after is inclusive, created_before exclusive; times carry milliseconds.
    after = await listing(client, created_after=second["created_at"])
    assert ids(after) == [third["job_id"], second["job_id"]]
    before = await listing(client, created_before=second["created_at"])
    assert ids(before) == [first["job_id"]]
    window = await listing(
        client, created_after=second["created_at"], created_before=third["created_at"]
    )
    assert ids(window) == [second["job_id"]]
    # Any timezone offset is accepted and means the same instant.
    far_future = await listing(client, created_after="2999-01-01T00:00:00+02:00")
    assert far_future["data"] == []
    past = await listing(client, created_after="2000-01-01T00:00:00-05:00")
    assert len(past["data"]) == 3


async def test_a_team_sees_only_its_own_jobs(gateway: Gateway) -> None:
    runtime = gateway.runtime
    alice = gateway.client(await new_key(runtime))
    bob = gateway.client(await new_key(runtime))
    team = f"team-shared-{uuid.uuid4().hex[:8]}"
    carol = gateway.client(await new_key(runtime, team=team))
    dave = gateway.client(await new_key(runtime, team=team))  # another key, same team
    alice_jobs = await create_jobs(alice, 2)
    bob_jobs = await create_jobs(bob, 3)
    carol_jobs = await create_jobs(carol, 1)
    assert ids(await listing(alice)) == [j["job_id"] for j in reversed(alice_jobs)]
    assert ids(await listing(bob)) == [j["job_id"] for j in reversed(bob_jobs)]
    assert ids(await listing(dave)) == [j["job_id"] for j in carol_jobs]
    # A cursor taken from another team's listing reveals nothing of that team.
    bob_page = await listing(bob, limit=1)
    assert bob_page["next_cursor"] is not None
    crossed = await listing(alice, cursor=bob_page["next_cursor"])
    assert set(ids(crossed)) <= {j["job_id"] for j in alice_jobs}
    for job_id in ids(crossed):
        assert job_id not in {j["job_id"] for j in bob_jobs}
