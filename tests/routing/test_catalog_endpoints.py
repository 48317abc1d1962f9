"""``GET /v1/models``, ``GET /v1/providers`` and the routing refusals of ``POST /v1/images``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from app.routing.stats import percentile
from tests.conftest import Backend, Gateway
from tests.emulators.support import Knobs
from tests.helpers import body, new_key
from tests.routing.priced import ROUTING, priced_gateway, run_jobs, small_job


def _seconds(attempt: dict[str, Any]) -> float:
    started = datetime.fromisoformat(attempt["submitted_at"])
    finished = datetime.fromisoformat(attempt["finished_at"])
    return (finished - started).total_seconds()


async def test_models_list_aliases_offers_and_1024_prices(gateway: Gateway) -> None:
    key = await new_key(gateway.runtime, scopes=["usage:read"])  # any valid key will do
    assert (await gateway.http.get("/v1/models")).status_code == 401
    response = await gateway.http.get("/v1/models", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    [model] = [m for m in response.json()["data"] if m["id"] == "black-forest-labs/flux-2-dev"]
    assert "flux-2-dev" in model["aliases"]
    offers = {o["provider"]: o for o in model["providers"]}
    assert offers["simulator"]["configured"] is True
    assert offers["simulator"]["price_1024_usd"] == "0.003000"
    assert offers["fal"] == {
        "provider": "fal",
        "configured": False,
        "upstream_model": "fal-ai/flux-2",
        "price_1024_usd": "0.012000",
        "price": {
            "kind": "per_megapixel",
            "usd_per_mp": "0.012",
            "input_usd_per_mp": "0.012",
            "min_input_mp": "1",
            "lora_usd_per_mp": "0.021",
        },
    }
    assert offers["deepinfra"]["price_1024_usd"] == "0.010000"
    for unpriced in ("replicate", "novita", "together", "coretoday"):
        assert offers[unpriced]["price_1024_usd"] is None  # unknown, never invented


async def test_providers_show_health_that_matches_a_scripted_run(
    backend: Backend, tmp_path: Path
) -> None:
    scripted = {"cheap": Knobs(latency=(0.05, 0.25), seed=3)}
    fresh = ROUTING | {"stats_ttl_s": 0.0}  # the listing reads the statistics as they are now
    async for rig in priced_gateway(backend, tmp_path, knobs=scripted, routing=fresh):
        gateway, cheap = rig.gateway, rig.emulators["cheap"]
        client = gateway.client(await new_key(gateway.runtime))
        only = {"routing": {"providers": [rig.names["cheap"]]}}
        jobs = []
        for i in range(6):  # succeed
            jobs += await run_jobs(client, [small_job(f"ok {i}") | only])
        cheap.knobs.failure_rate = 1.0
        for i in range(2):  # fail at the upstream (its fault)
            jobs += await run_jobs(client, [small_job(f"bad {i}") | only])
        cheap.knobs.failure_rate, cheap.knobs.moderation_rate = 0.0, 1.0
        jobs += await run_jobs(client, [small_job("flagged") | only])  # not its fault
        assert [j["status"] for j in jobs] == ["completed"] * 6 + ["failed"] * 3
        assert [j["error"]["code"] for j in jobs[6:]] == ["upstream_error"] * 2 + ["moderated"]

        key = await new_key(gateway.runtime, scopes=["images:read"])
        response = await gateway.http.get("/v1/providers", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        listed = {p["name"]: p for p in response.json()["data"]}
        entry = listed[rig.names["cheap"]]
        assert entry["configured"] is True
        assert entry["breaker"] == {
            "state": "closed",
            "retry_in_s": 0.0,
            "consecutive_failures": 2,  # the moderated job does not count either way
            "window_calls": 8,
            "window_failures": 2,
        }
        durations = sorted(_seconds(j["attempts"][0]) for j in jobs[:6])
        observed = entry["observed"]
        assert observed["samples"] == 8
        assert observed["success_rate"] == 0.75
        assert observed["in_flight"] == 0
        assert abs(observed["p50_s"] - percentile(durations, 0.5)) <= 0.002
        assert abs(observed["p95_s"] - percentile(durations, 0.95)) <= 0.002
        assert observed["p50_s"] >= 0.05  # no faster than the emulator's own latency
        [per_model] = entry["models"]
        assert per_model["price_1024_usd"] == "0.010000"
        assert per_model["observed"] == observed  # one model: the same figures
        # The other two never ran anything; unconfigured catalog providers have no breaker.
        idle = listed[rig.names["next"]]
        assert idle["observed"]["samples"] == 0 and idle["observed"]["p50_s"] is None
        assert idle["breaker"]["state"] == "closed"
        assert idle["models"][0]["price_1024_usd"] == "0.015000"
        assert listed["fal"]["configured"] is False and listed["fal"]["breaker"] is None

        # A third failure in a row (a refused submit) opens its breaker; the listing says so.
        cheap.knobs.moderation_rate, cheap.knobs.submit_5xx = 0.0, 1
        [refused] = await run_jobs(client, [small_job("refused")])
        assert [(rig.role(a["provider"]), a["status"]) for a in refused["attempts"]] == [
            ("cheap", "not_accepted"),
            ("next", "completed"),
        ]
        response = await gateway.http.get("/v1/providers", headers={"X-API-Key": key})
        entry = {p["name"]: p for p in response.json()["data"]}[rig.names["cheap"]]
        assert entry["breaker"]["state"] == "open"
        assert entry["breaker"]["retry_in_s"] == 30.0
        assert entry["observed"]["samples"] == 9
        assert entry["observed"]["success_rate"] == round(6 / 9, 4)


async def test_no_route_names_why_each_provider_was_excluded(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    response = await client.create(body() | {"routing": {"providers": ["nowhere"]}})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "no_route"
    reasons = {e["provider"]: e["reason"] for e in problem["excluded"]}
    assert reasons["nowhere"] == "does not serve this model"
    assert reasons["simulator"] == "not in routing.providers"
    assert reasons["fal"] == "not configured"
    assert "nowhere: does not serve this model" in problem["detail"]

    response = await client.create(body() | {"routing": {"max_cost_usd": "0.001"}})
    assert response.status_code == 422, response.text
    reasons = {e["provider"]: e["reason"] for e in response.json()["excluded"]}
    assert reasons["simulator"] == "above routing.max_cost_usd"

    too_many = body(input_images=[f"https://example.com/{i}.png" for i in range(4)])
    response = await client.create(too_many | {"routing": {"providers": ["simulator"]}})
    assert response.status_code == 202  # the simulator takes 4; the input rules cap it at 4
