"""Scopes on every route: walk the application's routes and check each ``/v1`` route refuses a
key lacking its scope (403), refuses no key or a bad key (401), and lets a key holding exactly
that scope past the check. A new ``/v1`` route with no authentication fails this test unless it
is on the short public list below.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from app.auth.dependencies import authenticate
from app.auth.keys import SCOPES, generate_key
from tests.conftest import Gateway
from tests.helpers import new_key

# Routes that take no API key, and why.
PUBLIC = {
    ("GET", "/v1/files/{key:path}"): "signed URL (exp + sig) for <img> tags",
    ("POST", "/v1/providers/{name}/webhook"): "upstream webhooks, verified by signature",
}
_PARAM = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class Guarded:
    method: str
    path: str
    scopes: frozenset[str]  # empty: any valid key
    authenticated: bool

    @property
    def url(self) -> str:
        return _PARAM.sub("img_00000000000000000000000000", self.path)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def v1_routes(app: Any) -> list[Guarded]:
    routes = []
    for route in iter_route_contexts(app.routes):
        path = route.path
        if not path or not path.startswith("/v1/"):
            continue
        dependant = getattr(route, "dependant", None)
        calls = list(_calls(dependant)) if dependant is not None else []
        scopes = frozenset(
            scope for call in calls if (scope := getattr(call, "required_scope", None))
        )
        for method in sorted(route.methods or ()):
            routes.append(Guarded(method, path, scopes, authenticate in calls))
    return routes


async def _call(gateway: Gateway, route: Guarded, headers: dict[str, str]) -> int:
    payload = {} if route.method in ("POST", "PATCH", "PUT") else None
    response = await gateway.http.request(
        route.method, route.url, json=payload, headers=headers, timeout=10
    )
    return response.status_code


async def test_every_v1_route_is_authenticated_or_explicitly_public(gateway: Gateway) -> None:
    routes = v1_routes(gateway.http._transport.app)  # type: ignore[attr-defined]
    assert len(routes) >= 10  # the walk really saw the application
    unguarded = [
        (r.method, r.path)
        for r in routes
        if not r.authenticated and (r.method, r.path) not in PUBLIC
    ]
    assert unguarded == [], f"/v1 routes without an API key check: {unguarded}"
    assert {(r.method, r.path) for r in routes} >= set(PUBLIC)
    admin_routes = [r for r in routes if r.path.startswith("/v1/admin/")]
    assert admin_routes and all(r.scopes == {"admin"} for r in admin_routes)
    writes = {(r.method, r.path): r.scopes for r in routes}
    assert writes[("POST", "/v1/images")] == {"images:write"}
    assert writes[("DELETE", "/v1/images/{job_id}")] == {"images:write"}
    assert writes[("GET", "/v1/images/{job_id}")] == {"images:read"}


async def test_every_route_refuses_keys_lacking_its_scope(gateway: Gateway) -> None:
    routes = [
        r
        for r in v1_routes(gateway.http._transport.app)  # type: ignore[attr-defined]
        if r.authenticated
    ]
    keys: dict[frozenset[str], str] = {}

    async def key_with(scopes: frozenset[str]) -> str:
        if scopes not in keys:
            team = f"scopes-{uuid.uuid4().hex[:6]}"
            keys[scopes] = await new_key(gateway.runtime, team=team, scopes=sorted(scopes))
        return keys[scopes]

    failures = []
    for route in routes:
        for headers, expected in (
            ({}, 401),
            ({"Authorization": "Bearer " + generate_key()}, 401),
            ({"X-API-Key": "ig_not-a-key"}, 401),
        ):
            status = await _call(gateway, route, headers)
            if status != expected:
                failures.append((route.method, route.path, "bad credentials", status))
        for scope in route.scopes:
            # Everything but the scope (and admin, which implies every scope).
            lacking = await key_with(frozenset(SCOPES - {scope, "admin"}))
            status = await _call(gateway, route, {"Authorization": f"Bearer {lacking}"})
            if status != 403:
                failures.append((route.method, route.path, f"lacks {scope}", status))
        if route.scopes:
            holding = await key_with(frozenset(route.scopes))
            status = await _call(gateway, route, {"Authorization": f"Bearer {holding}"})
            if status in (401, 403):
                failures.append((route.method, route.path, "holds its scopes", status))
    assert failures == []


async def test_admin_scope_implies_every_other_scope(gateway: Gateway) -> None:
    admin_only = await new_key(gateway.runtime, scopes=["admin"])
    headers = {"Authorization": f"Bearer {admin_only}"}
    assert (await gateway.http.get("/v1/images", headers=headers)).status_code == 200
    created = await gateway.http.post(
        "/v1/images", json={"model": "flux-2-dev", "input": {"prompt": "x"}}, headers=headers
    )
    assert created.status_code == 202, created.text
