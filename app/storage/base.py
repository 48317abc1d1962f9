"""The storage interface every output backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object being read: its size and type, and its bytes as chunks (read once)."""

    size: int
    content_type: str
    chunks: AsyncIterator[bytes]


class Storage(Protocol):
    """Where output images live. Keys are ``{job_id}/{index}.{ext}``; every call is idempotent."""

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; a key that is already gone is not an error."""

    async def open(self, key: str) -> StoredObject | None:
        """The object for streaming, or None when it does not exist."""

    def local_path(self, key: str) -> Path | None:
        """A file on this host holding ``key`` (served with sendfile), or None."""

    async def aclose(self) -> None: ...
