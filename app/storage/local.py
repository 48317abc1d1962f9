"""Output files in a local folder (the embedded default, or a volume shared by the processes)."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
from collections.abc import AsyncIterator
from io import BufferedReader
from pathlib import Path

from app.storage.base import CHUNK_BYTES, StoredObject


class LocalStorage:
    """A folder on disk; writes are atomic (temp file + rename), so readers never see halves."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError("storage key escapes the storage root")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, True)
        # The per-job folder goes with its last file; a folder still in use is left alone.
        await asyncio.to_thread(_remove_if_empty, path.parent, self.root)

    async def open(self, key: str) -> StoredObject | None:
        path = self.local_path(key)
        if path is None:
            return None
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            return None
        size = os.fstat(handle.fileno()).st_size
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return StoredObject(size, content_type, _chunks(handle))

    def local_path(self, key: str) -> Path | None:
        try:
            path = self._path(key)
        except ValueError:
            return None
        return path if path.is_file() else None

    async def aclose(self) -> None:
        return None


async def _chunks(handle: BufferedReader) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


def _remove_if_empty(folder: Path, root: Path) -> None:
    if folder != root and folder.is_relative_to(root):
        with contextlib.suppress(OSError):  # not empty (or already gone)
            folder.rmdir()
