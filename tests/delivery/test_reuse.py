"""Opt-in result reuse: same team, same model and normalised input, explicit seed, completed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Backend, Gateway
from tests.delivery.conftest import running
from tests.delivery.helpers import deliveries
from tests.helpers import body, new_key


def seeded(
    prompt: str = "a reusable fox", *, cache: bool | None = None, **fields: Any
) -> dict[str, Any]:
    """A seeded request; ``fields`` go into ``input`` except ``webhook``."""
    webhook = fields.pop("webhook", None)
    payload = body(prompt, seed=1234, output_format="png", **fields)
    if cache is not None:
        payload["cache"] = cache
    if webhook is not None:
        payload["webhook"] = webhook
    return payload


async def test_a_cached_request_returns_at_once_at_zero_cost_with_the_same_images(
    isolated: Backend, tmp_path: Path
) -> None:
    async with running(isolated, tmp_path) as gateway:
        key = await new_key(gateway.runtime, team=f"reuse-{tmp_path.name}")
        client = gateway.client(key)
        original = await client.wait((await client.create(seeded(cache=True))).json()["job_id"])
        assert original["cached"] is False and original["cost"]["actual_usd"] != "0.000000"

        hook = "https://hooks.example.test/reuse"
        answer = await client.create(seeded(cache=True, webhook=hook), Prefer="wait=5")
        assert answer.status_code == 200, answer.text  # terminal the moment it was created
        cached = answer.json()
        assert cached["job_id"] != original["job_id"]
        assert (cached["status"], cached["stage"], cached["cached"]) == ("completed", "done", True)
        assert cached["cost"] == {
            "estimated_usd": "0.000000",
            "actual_usd": "0.000000",
            "currency": "USD",
        }
        assert cached["attempts"] == [] and cached["provider"] == original["provider"]
        assert cached["result"] == original["result"]  # the same stored files, the same URLs
        image = await gateway.http.get(cached["result"]["images"][0]["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        [delivery] = await deliveries(gateway.runtime, cached["job_id"])  # announced as usual
        assert delivery.event == "completed"

        # Another key of the same team shares the cache; another team does not.
        sibling = gateway.client(await new_key(gateway.runtime, team=f"reuse-{tmp_path.name}"))
        assert (await sibling.create(seeded(cache=True))).json()["cached"] is True
        stranger = gateway.client(await new_key(gateway.runtime))
        assert (await stranger.create(seeded(cache=True))).json()["cached"] is False

        # Anything different in the normalised input (or the model) is another request.
        assert (await client.create(seeded(cache=True, num_outputs=2))).json()["cached"] is False
        assert (await client.create(seeded("another fox", cache=True))).json()["cached"] is False
        # Opting out, or leaving it to the operator's default (off here), runs it afresh.
        assert (await client.create(seeded(cache=False))).json()["cached"] is False
        assert (await client.create(seeded())).json()["cached"] is False


async def test_an_unseeded_request_is_never_served_from_the_cache(
    isolated: Backend, tmp_path: Path
) -> None:
    async with running(isolated, tmp_path, reuse_results_default=True) as gateway:
        client = gateway.client(await new_key(gateway.runtime))
        for seed in (None, -1):
            payload = {**body("a random fox", output_format="png"), "cache": True}
            if seed is not None:
                payload["input"]["seed"] = seed
            first = await client.wait((await client.create(payload)).json()["job_id"])
            again = (await client.create(payload)).json()
            assert first["status"] == "completed"
            assert again["cached"] is False and again["status"] == "pending"
            await client.wait(again["job_id"])
        # The operator default (on here) applies to seeded requests that do not say.
        done = await client.wait((await client.create(seeded("defaulted"))).json()["job_id"])
        assert done["cached"] is False
        assert (await client.create(seeded("defaulted"))).json()["cached"] is True
        assert (await client.create(seeded("defaulted", cache=False))).json()["cached"] is False


async def test_failed_jobs_are_never_reused(isolated: Backend, tmp_path: Path) -> None:
    failing = {"latency_s": 0.05, "latency_jitter": 0.0, "failure_rate": 1.0}
    async with running(isolated, tmp_path, simulator=failing) as gateway:
        client = gateway.client(await new_key(gateway.runtime))
        first = await client.wait(
            (await client.create(seeded("doomed", cache=True))).json()["job_id"]
        )
        assert first["status"] == "failed"
        again = (await client.create(seeded("doomed", cache=True))).json()
        assert again["cached"] is False and again["status"] == "pending"
        assert (await client.wait(again["job_id"]))["status"] == "failed"


async def test_the_shared_default_is_off(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    await client.wait((await client.create(seeded("default off"))).json()["job_id"])
    assert (await client.create(seeded("default off"))).json()["cached"] is False
