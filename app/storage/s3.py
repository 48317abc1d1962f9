"""Output files in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, Ceph, ...).

boto3 is synchronous, so every call runs on a small dedicated thread pool: a slow bucket then
holds up S3 calls only, never the event loop or the default executor that DNS lookups and image
decoding share. The client is thread-safe and keeps its own connection pool of the same size.

Objects are streamed to clients through ``/v1/files`` (HMAC-signed gateway URLs), not handed out
as presigned S3 URLs: one URL shape for both backends, retention is enforced in one place, and
the bucket's endpoint can stay on a private network.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from app.config import ConfigError, S3Settings
from app.storage.base import CHUNK_BYTES, StoredObject

T = TypeVar("T")
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Storage:
    def __init__(self, settings: S3Settings, *, pool_size: int = 16) -> None:
        if not settings.bucket:
            raise ConfigError("IMAGEGATE_S3__BUCKET is required when IMAGEGATE_STORAGE_BACKEND=s3")
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        secret = settings.secret_access_key
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            # None falls back to boto3's own chain (environment, instance profile, ...).
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(
                s3={"addressing_style": settings.addressing_style},
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                max_pool_connections=pool_size,
            ),
        )
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="s3")

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def _call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(
            self._client.put_object,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ContentType=content_type,
        )

    async def delete(self, key: str) -> None:
        # S3 answers 204 for a key that does not exist: deleting twice is harmless.
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def open(self, key: str) -> StoredObject | None:
        try:
            answer: dict[str, Any] = await self._call(
                self._client.get_object, Bucket=self.bucket, Key=self._key(key)
            )
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise
        body = answer["Body"]
        content_type = str(answer.get("ContentType") or "application/octet-stream")
        return StoredObject(int(answer["ContentLength"]), content_type, self._chunks(body))

    async def _chunks(self, body: Any) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._call(body.read, amt=CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    def local_path(self, key: str) -> Path | None:
        return None

    async def aclose(self) -> None:
        self._client.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
