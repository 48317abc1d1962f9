"""Copying outputs: a URL that works once is enough; a broken or huge image fails cleanly."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Backend, start_gateway
from tests.emulators.support import Knobs
from tests.helpers import new_key
from tests.providers.conftest import Wire
from tests.providers.test_upstream_failures import payload
from tests.providers.upstreams import UPSTREAMS

REPLICATE = UPSTREAMS["replicate"]


async def test_an_output_served_once_then_404_still_completes_from_the_stored_copy(
    wire: Wire,
) -> None:
    async for gateway, emulator in wire(REPLICATE, Knobs(serve_outputs_once=True)):
        client = gateway.client(await new_key(gateway.runtime))
        job = await client.wait((await client.create(payload(REPLICATE))).json()["job_id"])
        assert job["status"] == "completed", job
        [stored] = emulator.files.files.values()
        assert stored.served == 1  # the upstream URL is gone now...
        download = await gateway.http.get(job["result"]["images"][0]["url"])
        assert download.status_code == 200  # ...and our copy still serves
        assert download.content == stored.data


async def test_a_corrupt_download_fails_the_job_with_output_fetch_failed(wire: Wire) -> None:
    async for gateway, emulator in wire(REPLICATE, Knobs()):
        emulator.files.corrupt = True
        client = gateway.client(await new_key(gateway.runtime))
        job = await client.wait((await client.create(payload(REPLICATE))).json()["job_id"])
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "output_fetch_failed"
        assert len(emulator.ledger) == 1


async def test_an_oversized_output_fails_the_job_with_output_fetch_failed(
    backend: Backend, tmp_path: Path
) -> None:
    emulator = REPLICATE.make()
    with REPLICATE.serve(emulator) as url:
        providers = {"replicate": REPLICATE.settings(emulator, url)}
        async for gateway in start_gateway(
            backend,
            tmp_path,
            providers=providers,
            simulator={"enabled": False},
            output_max_bytes=500,
        ):
            client = gateway.client(await new_key(gateway.runtime))
            job = await client.wait((await client.create(payload(REPLICATE))).json()["job_id"])
            assert job["status"] == "failed", job
            assert job["error"]["code"] == "output_fetch_failed"
            assert "larger than" in job["error"]["message"]
