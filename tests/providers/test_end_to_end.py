"""Each upstream end to end: a job created on /v1/images is submitted by the worker to that
upstream's emulator, completes, and its image is copied into imagegate's storage."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Backend, Gateway, start_gateway
from tests.helpers import body, new_key
from tests.providers.upstreams import UPSTREAMS, Upstream, stored_files


@pytest.fixture(params=sorted(UPSTREAMS))
def upstream(request: pytest.FixtureRequest) -> Upstream:
    return UPSTREAMS[request.param]


@pytest.fixture
async def wired(
    upstream: Upstream, backend: Backend, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, Any]]:
    emulator = upstream.make()
    with upstream.serve(emulator) as url:
        providers = {upstream.name: upstream.settings(emulator, url)}
        async for gateway in start_gateway(
            backend, tmp_path, providers=providers, simulator={"enabled": False}
        ):
            yield gateway, emulator


async def test_job_completes_on_the_upstream_and_is_stored(
    wired: tuple[Gateway, Any], upstream: Upstream
) -> None:
    gateway, emulator = wired
    client = gateway.client(await new_key(gateway.runtime))
    payload = body("a lighthouse at dusk", aspect_ratio="1:1", **upstream.input)
    created = await client.create(payload)
    assert created.status_code == 202, created.text
    job = await client.wait(created.json()["job_id"])
    assert job["status"] == "completed", job
    assert job["provider"] == upstream.name
    [attempt] = job["attempts"]
    assert attempt["provider"] == upstream.name and attempt["upstream_id"]
    assert len(emulator.ledger) == 1  # exactly one paid submission
    [image] = job["result"]["images"]
    download = await gateway.http.get(image["url"])
    assert download.status_code == 200
    with Image.open(io.BytesIO(download.content)) as picture:
        assert picture.size == (image["width"], image["height"])
    # The stored copy is the upstream's own bytes (from its CDN, or inlined as base64).
    served = list(stored_files(emulator))
    if upstream.name == "deepinfra":
        assert served == []  # DeepInfra answers with b64_json only: decoded into storage
    else:
        assert download.content in served
