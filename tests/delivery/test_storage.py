"""Output storage: a local folder or an S3-compatible bucket (moto in server mode on loopback),
signed URLs for both, and retention that deletes the files and makes the jobs say so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from sqlalchemy import update

from app.kit.timeutil import utcnow
from app.models import Output
from tests.conftest import Backend, Gateway
from tests.delivery.conftest import running
from tests.helpers import Client, body, new_key

BUCKET = "imagegate-outputs"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)
    bucket.create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)


def stored(endpoint: str, key: str) -> bytes | None:
    try:
        answer = s3_client(endpoint).get_object(Bucket=BUCKET, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    data: bytes = answer["Body"].read()
    return data


def storage_settings(kind: str, endpoint: str, prefix: str) -> dict[str, Any]:
    if kind == "local":
        return {"storage_backend": "local"}
    return {
        "storage_backend": "s3",
        "s3": {
            "endpoint_url": endpoint,
            "bucket": BUCKET,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "prefix": prefix,
            "addressing_style": "path",
        },
    }


async def expired(client: Client, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await client.get(job_id)).json()
        if job["result"] and job["result"].get("expired_at"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{job_id} never reported its files expired: {job['result']}")
        await asyncio.sleep(0.05)


async def backdate_outputs(gateway: Gateway, job_id: str, days: float) -> None:
    async with gateway.runtime.sessions() as session:
        await session.execute(
            update(Output)
            .where(Output.job_id == job_id)
            .values(created_at=utcnow() - timedelta(days=days))
        )
        await session.commit()


@pytest.mark.parametrize("kind", ["s3", "local"])
async def test_outputs_are_stored_served_signed_and_deleted_after_retention(
    isolated: Backend, tmp_path: Path, s3_endpoint: str, kind: str
) -> None:
    prefix = f"run-{tmp_path.name}/"
    settings = storage_settings(kind, s3_endpoint, prefix)
    async with running(
        isolated, tmp_path, retention_days=1.0, retention_sweep_interval_s=0.1, **settings
    ) as gateway:
        client = gateway.client(await new_key(gateway.runtime))
        seeded = {**body("kept for a day", seed=7, num_outputs=2), "cache": True}
        job = await client.wait((await client.create(seeded)).json()["job_id"])
        assert job["status"] == "completed"
        images = job["result"]["images"]
        keys = [f"{job['job_id']}/{i}.webp" for i in range(2)]
        for image, key in zip(images, keys, strict=True):
            served = await gateway.http.get(image["url"])  # signed, no API key
            assert served.status_code == 200, served.text
            assert served.headers["content-type"] == "image/webp"
            assert len(served.content) == image["bytes"]
            if kind == "s3":
                assert stored(s3_endpoint, prefix + key) == served.content
                assert not (gateway.runtime.settings.resolved_storage_dir / key).exists()
            else:
                assert (gateway.runtime.settings.resolved_storage_dir / key).read_bytes() == (
                    served.content
                )
        tampered = images[0]["url"].replace("sig=", "sig=0")[:-1]
        assert (await gateway.http.get(tampered)).status_code == 403

        # A cached copy shares the files, so it expires with them.
        copy = await client.create(seeded)
        assert copy.json()["cached"] is True

        await backdate_outputs(gateway, job["job_id"], days=1.5)
        gone = await expired(client, job["job_id"])
        copy_gone = await expired(client, copy.json()["job_id"])
        for shown in (gone, copy_gone):
            assert shown["status"] == "completed"
            assert all(i["url"] is None and i["expired"] for i in shown["result"]["images"])
            assert [i["bytes"] for i in shown["result"]["images"]] == [i["bytes"] for i in images]
        for image, key in zip(images, keys, strict=True):
            assert (await gateway.http.get(image["url"])).status_code == 404
            if kind == "s3":
                assert stored(s3_endpoint, prefix + key) is None
            else:
                assert not (gateway.runtime.settings.resolved_storage_dir / key).exists()
        # Expired images are never reused: the same request now runs afresh.
        fresh = await client.create(seeded)
        assert fresh.json()["cached"] is False and fresh.json()["status"] == "pending"
        await client.wait(fresh.json()["job_id"])
