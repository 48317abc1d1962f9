"""``/v1/files/{key}``: stored outputs behind signed, expiring URLs (no API key needed)."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from app.errors import Forbidden, NotFound
from app.web.deps import RuntimeDep

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.get("/{key:path}", response_class=FileResponse)
async def get_file(
    key: str,
    runtime: RuntimeDep,
    exp: Annotated[int, Query(ge=0, le=2**41)],
    sig: Annotated[str, Query(min_length=64, max_length=64)],
) -> Response:
    """An output image, valid until ``exp`` (unix seconds) with a matching ``sig``."""
    if not runtime.signer.verify(key, exp, sig):
        raise Forbidden("the file URL is expired or its signature is invalid")
    headers = {"Cache-Control": "private, max-age=3600, immutable"}
    path = runtime.storage.local_path(key)
    if path is not None:  # a local file: sent with sendfile
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers=headers)
    stored = await runtime.storage.open(key)  # a bucket object: streamed through
    if stored is None:
        raise NotFound("the file no longer exists")
    headers["Content-Length"] = str(stored.size)
    return StreamingResponse(stored.chunks, media_type=stored.content_type, headers=headers)
