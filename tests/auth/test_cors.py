"""CORS for browser apps: preflights and simple requests from allowed and disallowed origins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Backend, Gateway, start_gateway
from tests.helpers import body, new_key

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"


@pytest.fixture
async def cors_gateway(sqlite_backend: Backend, tmp_path: Path) -> Any:
    async for gw in start_gateway(
        sqlite_backend,
        tmp_path,
        run_worker=False,
        cors_origins=[ALLOWED],
        rate_limit_per_minute=600,
    ):
        yield gw


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }


async def test_preflight_from_an_allowed_origin(cors_gateway: Gateway) -> None:
    response = await cors_gateway.http.options("/v1/images", headers=_preflight(ALLOWED))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    allowed_methods = response.headers["access-control-allow-methods"]
    assert "POST" in allowed_methods and "DELETE" in allowed_methods
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= {
        h.strip() for h in allowed_headers.split(",")
    }
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers  # keys, not cookies


async def test_preflight_from_a_disallowed_origin_is_refused(cors_gateway: Gateway) -> None:
    response = await cors_gateway.http.options("/v1/images", headers=_preflight(OTHER))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_simple_requests_expose_headers_only_to_allowed_origins(
    cors_gateway: Gateway,
) -> None:
    key = await new_key(cors_gateway.runtime)
    auth = {"Authorization": f"Bearer {key}"}
    created = await cors_gateway.http.post(
        "/v1/images", json=body(), headers={**auth, "Origin": ALLOWED}
    )
    assert created.status_code == 202
    assert created.headers["access-control-allow-origin"] == ALLOWED
    exposed = {
        h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")
    }
    assert {"location", "x-request-id", "retry-after", "ratelimit", "ratelimit-policy"} <= exposed
    assert created.headers["ratelimit"].startswith('"key";r=')

    # Errors carry CORS headers too, so a browser app can read the problem.
    unauthorised = await cors_gateway.http.get("/v1/images", headers={"Origin": ALLOWED})
    assert unauthorised.status_code == 401
    assert unauthorised.headers["access-control-allow-origin"] == ALLOWED

    other = await cors_gateway.http.get("/v1/images", headers={**auth, "Origin": OTHER})
    assert other.status_code == 200  # CORS is the browser's guard; the key still decides
    assert "access-control-allow-origin" not in other.headers  # the browser hides the answer
    assert "origin" in other.headers["vary"].lower()  # caches keep per-origin answers apart


async def test_no_cors_headers_when_no_origins_are_configured(gateway: Gateway) -> None:
    response = await gateway.http.options("/v1/images", headers=_preflight(ALLOWED))
    assert "access-control-allow-origin" not in response.headers
    simple = await gateway.http.get("/healthz", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in simple.headers
