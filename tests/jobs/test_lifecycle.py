"""A job's whole life on the simulator: create, follow, fetch the image, cancel."""

from __future__ import annotations

import io
import time
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from tests.conftest import Gateway
from tests.helpers import SEED_EXAMPLE, body, new_key


async def test_seed_example_is_accepted_as_written(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    response = await client.create(SEED_EXAMPLE)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/images/{job['job_id']}"
    assert job["job_id"].startswith("img_") and len(job["job_id"]) == 30
    assert job["status"] == "pending"
    assert job["input"]["output_format"] == "jpg"
    assert job["model"] == "black-forest-labs/flux-2-dev"
    done = await client.wait(job["job_id"])
    assert done["status"] == "completed"
    assert done["result"]["images"][0]["content_type"] == "image/jpeg"


async def test_png_16_9_completes_with_a_signed_downloadable_image(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    created = await client.create(body(output_format="png", aspect_ratio="16:9"))
    assert created.status_code == 202
    job = await client.wait(created.json()["job_id"])
    assert job["status"] == "completed", job
    assert job["stage"] == "done" and job["completed_at"] is not None
    assert job["provider"] == "simulator"
    assert job["cost"]["estimated_usd"] == job["cost"]["actual_usd"] == "0.003000"
    assert [a["status"] for a in job["attempts"]] == ["completed"]
    image = job["result"]["images"][0]
    width, height = image["width"], image["height"]
    assert width % 32 == 0 and height % 32 == 0
    assert abs((width / height) / (16 / 9) - 1) <= 0.02
    assert 0.9 <= width * height / 1e6 <= 1.1
    # The signed URL needs no API key.
    download = await gateway.http.get(image["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(download.content)) as picture:
        assert picture.format == "PNG"
        assert picture.size == (width, height)
    assert len(download.content) == image["bytes"]


async def test_file_url_refused_with_bad_signature_or_after_expiry(gateway: Gateway) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    job = await client.wait((await client.create(body())).json()["job_id"])
    url = job["result"]["images"][0]["url"]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    exp, sig = query["exp"][0], query["sig"][0]
    tampered = f"{parts.path}?exp={exp}&sig={'0' * 64}"
    assert (await gateway.http.get(tampered)).status_code == 403
    extended = f"{parts.path}?exp={int(exp) + 3600}&sig={sig}"
    assert (await gateway.http.get(extended)).status_code == 403
    # A correctly signed URL whose time has passed is refused too.
    signer = gateway.runtime.signer
    key = parts.path.removeprefix("/v1/files/")
    old = signer.sign(key, now=time.time() - signer.ttl_s - 120)
    assert (await gateway.http.get(old)).status_code == 403
    assert (await gateway.http.get(signer.sign(key))).status_code == 200


async def test_cancel_a_pending_job_and_then_409(gateway: Gateway, tmp_path) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    payload = body(num_outputs=1)
    payload["routing"] = {"strategy": "ordered"}
    created = (await client.create(payload)).json()
    cancelled = await client.cancel(created["job_id"])
    if cancelled.status_code == 409:  # the 50 ms simulator may already have finished it
        assert (await client.get(created["job_id"])).json()["status"] == "completed"
        return
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    again = await client.cancel(created["job_id"])
    assert again.status_code == 409
    assert again.json()["code"] == "not_cancellable"
    final = await client.get(created["job_id"])
    assert final.json()["status"] == "cancelled"


async def test_another_teams_job_is_404(gateway: Gateway) -> None:
    alice = gateway.client(await new_key(gateway.runtime))
    bob = gateway.client(await new_key(gateway.runtime))
    job_id = (await alice.create(body())).json()["job_id"]
    assert (await bob.get(job_id)).status_code == 404
    assert (await bob.cancel(job_id)).status_code == 404
    assert (await alice.get(job_id)).status_code == 200
