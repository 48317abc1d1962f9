"""Input images imagegate fetches itself, through the safe-egress client.

``match_input_image`` needs the first input image's size to choose the output size (and so the
per-megapixel price). A data URL is measured in ``normalise``; an http(s) URL is fetched here at
admission: through ``runtime.egress.inputs`` (checked and pinned addresses, no redirects, at most
``input_image_max_bytes``, all within ``input_image_timeout_s``), asking only for the first
bytes, which hold the size in every format we accept. A URL the egress policy refuses is a 422
naming the field; an image we cannot reach or read keeps the 1:1 default (the upstream fetches
it on its own, from its own network).
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import structlog
from PIL import Image, UnidentifiedImageError

from app.errors import invalid
from app.jobs.normalise import NormalisedInput
from app.jobs.sizes import size_matching
from app.kit.egress import EgressError, EgressRefused
from app.runtime import Runtime

log = structlog.get_logger(__name__)

HEAD_BYTES = 256 * 1024  # enough for the size of a jpeg (after EXIF), png, gif or webp


async def with_input_image_size(runtime: Runtime, request: NormalisedInput) -> NormalisedInput:
    """``request`` with the size matching its first input image, when that is a URL to fetch."""
    if request.aspect_ratio != "match_input_image" or not request.input_images:
        return request
    url = request.input_images[0]
    if not url.lower().startswith(("http://", "https://")):
        return request  # a data URL was measured by normalise
    size = await fetch_image_size(runtime, url)
    if size is None:
        return request
    width, height = size_matching(*size)
    return dataclasses.replace(request, width=width, height=height)


async def fetch_image_size(runtime: Runtime, url: str) -> tuple[int, int] | None:
    try:
        response = await runtime.egress.inputs.get(
            url, headers={"Range": f"bytes=0-{HEAD_BYTES - 1}"}
        )
    except EgressRefused as exc:
        raise invalid(["input", "input_images", 0], f"is not allowed: {exc.reason}") from None
    except EgressError as exc:
        log.info("input image not measured", reason=str(exc))
        return None
    if response.status not in (200, 206):
        log.info("input image not measured", status=response.status)
        return None
    try:
        with warnings.catch_warnings():
            # Only the header is read: a huge declared size is no decompression risk here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(response.body)) as image:
                width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        log.info("input image not measured", reason="not a readable image")
        return None
    return (width, height) if width > 0 and height > 0 else None
