"""Schemathesis over ``/openapi.json`` against the in-process app (reliability item 24).

Every operation gets generated inputs, valid and invalid, with a valid API key: no answer may be a
5xx, and the answers must match the OpenAPI document (status codes, content types, headers,
response schemas, ``Allow`` on 405, rejecting schema-invalid data). A stateful run follows the
links create -> get -> cancel, and an explicit create -> get -> cancel -> cancel flow checks the
happy path's answers against the document too.

One check is left out on purpose: ``positive_data_acceptance`` ("a schema-valid request must be
accepted"). Several input rules cannot be written in JSON Schema: a cursor must be one the API
returned, a date must carry a timezone, a data URL must hold valid base64 of at most 10 MB, a
webhook must be https and pass the egress policy, metadata must fit in 4 KB, and a route must
exist under ``max_cost_usd``. Those answer 422 by contract. The document is narrowed in one way
only: ``model`` lists this deployment's catalog, so generated jobs can be created and followed.

The app runs on its own temporary SQLite database with a worker, so ``Prefer: wait`` returns as
soon as the simulator (50 ms) finishes. It makes no outbound connection: generated webhook and
input-image URLs still go through the egress policy (so refusals are real 422s), but names are
never resolved and nothing is ever sent. Hypothesis is derandomized and bounded.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.auth.keys import DEFAULT_SCOPES
from app.config import Settings
from app.kit.egress import EgressResolveError, SafeHttp, check_url
from app.kit.egress.client import EgressResponse
from app.main import create_app
from app.routing.catalog import load_catalog
from app.runtime import open_runtime
from app.setup import ADMIN_SCOPES, migrate
from app.webhooks.egress import Egress
from tests.conftest import Backend
from tests.helpers import body, new_key

TMP = Path(tempfile.gettempdir()) / f"imagegate-fuzz-{uuid.uuid4().hex[:12]}"


def _deployment(name: str, *, run_worker: bool) -> tuple[Settings, FastAPI]:
    url = f"sqlite+aiosqlite:///{TMP / name / 'imagegate.db'}"
    settings = Backend("sqlite", url, None, "fuzz:").settings(TMP / name)
    return settings, create_app(settings, run_worker=run_worker)


SETTINGS, APP = _deployment("busy", run_worker=True)
# The stateful run's app has no worker: its jobs stay pending, so every answer depends only on
# the steps Hypothesis drew (it replays steps while shrinking; a job finishing in between would
# change which links can be followed).
QUIET_SETTINGS, QUIET = _deployment("quiet", run_worker=False)

EXCLUDED = [positive_data_acceptance]
COMMON = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
}
FUZZ = hypothesis.settings(max_examples=15, **COMMON)
STATEFUL = hypothesis.settings(max_examples=20, stateful_step_count=6, **COMMON)

_JOB_ID = {"job_id": "$response.body#/job_id"}


def _for_this_deployment(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the links a client follows (create -> get -> cancel) and
    ``model`` narrowed to the catalog this app serves."""
    document = copy.deepcopy(document)
    catalog = load_catalog(SETTINGS.catalog_path, SETTINGS.simulator.price_usd)
    model = document["components"]["schemas"]["CreateImageJob"]["properties"]["model"]
    model["enum"] = catalog.known()
    paths = document["paths"]
    get_id = paths["/v1/images/{job_id}"]["get"]["operationId"]
    cancel_id = paths["/v1/images/{job_id}"]["delete"]["operationId"]
    links = {
        "GetJob": {"operationId": get_id, "parameters": _JOB_ID},
        "CancelJob": {"operationId": cancel_id, "parameters": _JOB_ID},
    }
    for status in ("200", "202"):
        paths["/v1/images"]["post"]["responses"][status]["links"] = links
    paths["/v1/images/{job_id}"]["get"]["responses"]["200"]["links"] = {
        "CancelJob": links["CancelJob"]
    }
    return document


schema = schemathesis.openapi.from_dict(_for_this_deployment(APP.openapi()))
schema.app = APP  # requests go to the app in-process (Schemathesis runs its lifespan)
quiet_schema = schemathesis.openapi.from_dict(_for_this_deployment(QUIET.openapi()))
quiet_schema.app = QUIET


# --- no outbound network ---------------------------------------------------------------------


class _NoDns:
    async def resolve(self, host: str, port: int) -> list[str]:
        raise OSError(f"no DNS in this test ({host})")


class _Offline(SafeHttp):
    """The policy check runs as usual; the request itself is never sent."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> EgressResponse:
        await check_url(url, self.policy, _NoDns())
        raise EgressResolveError(f"offline test: {method} {url} not sent")


def _go_offline(app: FastAPI) -> None:
    with asgi.get_client(app) as client:  # starts the app's lifespan (kept until shutdown)
        assert client.get("/healthz").status_code == 200
    runtime = app.state.runtime
    real = runtime.egress
    resolver = _NoDns()
    runtime.egress = Egress(
        resolver=resolver,
        webhooks=_Offline(real.webhooks.policy, resolver=resolver),
        inputs=_Offline(real.inputs.policy, resolver=resolver),
    )


# --- keys --------------------------------------------------------------------------------------


async def _issue_keys(settings: Settings, *scopes: Sequence[str]) -> list[str]:
    async with open_runtime(settings) as runtime:
        return [await new_key(runtime, team=f"fuzz-{i}", scopes=s) for i, s in enumerate(scopes)]


def _prepare(settings: Settings, app: FastAPI, *scopes: Sequence[str]) -> list[str]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.resolved_database_url)
    issued = asyncio.run(_issue_keys(settings, *scopes))
    _go_offline(app)
    return issued


@pytest.fixture(scope="module")
def keys() -> Iterator[dict[str, dict[str, str]]]:
    """Bearer headers for a team key and an admin key of ``APP``, and a team key of ``QUIET``;
    the apps stop after the module."""
    team, admin = _prepare(SETTINGS, APP, DEFAULT_SCOPES, ADMIN_SCOPES)
    (quiet,) = _prepare(QUIET_SETTINGS, QUIET, ADMIN_SCOPES)
    issued = {"team": team, "admin": admin, "quiet-admin": quiet}
    try:
        yield {name: {"Authorization": f"Bearer {key}"} for name, key in issued.items()}
    finally:
        asgi.shutdown_lifespans()
        shutil.rmtree(TMP, ignore_errors=True)


# --- the tests ---------------------------------------------------------------------------------


def test_document_describes_problem_answers() -> None:
    """Errors are documented as problem documents, not FastAPI's default shape."""
    document = APP.openapi()
    components = document["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert {"Problem", "FieldError"} <= set(components)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert list(responses["default"]["content"]) == ["application/problem+json"], path
            if "422" in responses:
                assert list(responses["422"]["content"]) == ["application/problem+json"], method


@schema.parametrize()
@FUZZ
def test_no_server_error_and_conformance(case: Any, keys: dict[str, dict[str, str]]) -> None:
    """All operations, admin key (so the admin endpoints' validation is reached too)."""
    response = case.call_and_validate(headers=keys["admin"], excluded_checks=EXCLUDED)
    assert response.status_code < 500, response.text


def _new_team_key(admin: dict[str, str]) -> dict[str, str]:
    with asgi.get_client(QUIET) as client:
        team = client.post("/v1/admin/teams", json={"name": uuid.uuid4().hex}, headers=admin)
        created = client.post("/v1/admin/keys", json={"team_id": team.json()["id"]}, headers=admin)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


def test_stateful_create_get_cancel(keys: dict[str, dict[str, str]]) -> None:
    seen: list[tuple[str, str, int]] = []
    auth: dict[str, str] = {}
    # Not the event stream: with no worker a job never ends, so neither would its stream (the
    # stateless fuzz covers it on the busy app).
    images = quiet_schema.include(path_regex=r"^/v1/images").exclude(path_regex=r"/events$")

    class Machine(images.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # A new team per example: the listing shows only this example's jobs, so a replay
            # (Hypothesis shrinking) cannot pick up a job an earlier run cancelled.
            auth.update(_new_team_key(keys["quiet-admin"]))

        def before_call(self, case: Any) -> None:
            # Hypothesis replays steps to shrink; the answers must not depend on state a replay
            # cannot see: an Idempotency-Key stored by an earlier run, or whether a job finished
            # within a Prefer wait. The stateless fuzz above covers both headers.
            for name in list(case.headers or {}):
                if name.lower() in ("idempotency-key", "prefer"):
                    del case.headers[name]

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": auth}

        def after_call(self, response: Any, case: Any) -> None:
            seen.append((case.method.upper(), case.path, response.status_code))

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            __tracebackhide__ = True
            case.validate_response(
                response, excluded_checks=EXCLUDED, transport_kwargs={"headers": auth}
            )

    Machine.run(settings=STATEFUL)
    assert all(status < 500 for _, _, status in seen), [s for s in seen if s[2] >= 500]
    # The links were followed: jobs were created, then read and cancelled through their ids.
    assert ("POST", "/v1/images", 202) in seen or ("POST", "/v1/images", 200) in seen, seen
    assert ("GET", "/v1/images/{job_id}", 200) in seen, seen
    assert any(
        m == "DELETE" and p == "/v1/images/{job_id}" and s in (200, 409) for m, p, s in seen
    ), seen


def test_create_get_cancel_answers_conform(keys: dict[str, dict[str, str]]) -> None:
    """The happy path, spelled out: each answer passes every check, the 5xx one included."""
    auth = keys["team"]
    create = schema["/v1/images"]["POST"]
    one = schema["/v1/images/{job_id}"]["GET"]
    cancel = schema["/v1/images/{job_id}"]["DELETE"]
    listing = schema["/v1/images"]["GET"]

    def call(case: Any, *statuses: int) -> Any:
        response = case.call_and_validate(
            headers=auth, additional_checks=[not_a_server_error], excluded_checks=EXCLUDED
        )
        assert response.status_code in statuses, response.text
        return response

    payload = body(aspect_ratio="3:2", output_format="png")
    payload["routing"] = {"strategy": "ordered"}
    job = call(create.Case(body=payload), 202).json()
    assert job["input"]["width"] == 1248 and job["input"]["height"] == 832
    job_id = job["job_id"]
    assert call(one.Case(path_parameters={"job_id": job_id}), 200).json()["job_id"] == job_id
    first = call(cancel.Case(path_parameters={"job_id": job_id}), 200, 409)
    second = call(cancel.Case(path_parameters={"job_id": job_id}), 409)
    assert second.json()["code"] == "not_cancellable"
    if first.status_code == 200:
        assert first.json()["status"] == "cancelled"
    listed = call(listing.Case(query={"limit": 5}), 200).json()
    assert job_id in [j["job_id"] for j in listed["data"]]
    missing = call(one.Case(path_parameters={"job_id": "img_" + "0" * 26}), 404)
    assert missing.headers["content-type"] == ["application/problem+json"]
    waited = call(create.Case(body=body(), headers={"Prefer": "wait=10"}), 200)
    assert waited.json()["status"] == "completed"
    assert waited.headers["preference-applied"] == ["wait=10"]
    refused = call(create.Case(body=body(seed=-2)), 422).json()
    assert refused["code"] == "invalid_input"
    assert refused["errors"] == [refused["errors"][0]] and refused["errors"][0]["loc"] == [
        "input",
        "seed",
    ]
