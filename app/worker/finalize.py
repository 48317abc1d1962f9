"""Finalize: copy a finished job's images into our storage, then complete it in one commit.

Copies are idempotent (storage keys are derived from the job and index), so a crash midway is
repaired by running the step again. A missing, corrupt or oversized image fails the job with
``output_fetch_failed``; a passing network error is retried a few times first.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from sqlalchemy import delete

from app.jobs import states
from app.jobs.normalise import NormalisedInput
from app.jobs.service import attempt_ref
from app.kit.crypto import sha256_hex
from app.models import Output
from app.providers.base import (
    ErrorCode,
    OutputSource,
    ProtocolViolation,
    ProviderError,
    TransientError,
    UpstreamOutput,
    UpstreamRef,
)
from app.providers.http import Deadlines, Phase, send
from app.routing.catalog import Catalog
from app.routing.pricing import actual_cost
from app.runtime import Runtime
from app.worker import context
from app.worker.context import log
from app.worker.leases import Claim, release

_FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}
_FETCH_RETRIES = 4


class BadOutput(Exception):
    """The bytes are not an image we can store (corrupt, unknown format, too large)."""


@dataclass(frozen=True, slots=True)
class StoredImage:
    key: str
    content_type: str
    width: int
    height: int
    size: int
    sha256: str
    upstream_url: str | None


async def finalize(runtime: Runtime, claim: Claim) -> None:
    async with runtime.sessions() as session:
        claimed = await context.load(session, claim)
        if claimed is None or claimed.attempt is None:
            return
        job, attempt = claimed.job, claimed.attempt
        ref = attempt_ref(job, attempt)
        outputs = [UpstreamOutput(**o) for o in attempt.outputs or []]
        provider = attempt.provider
    try:
        stored = [
            await _copy(runtime, provider, ref, output, index)
            for index, output in enumerate(outputs)
        ]
        problem: str | None = None if stored else "the upstream returned no images"
        transient = False
    except BadOutput as exc:
        problem, transient, stored = str(exc), False, []
    except (ProviderError, OSError) as exc:
        problem, transient, stored = f"could not fetch an output: {exc}", True, []
    async with runtime.sessions() as session:
        claimed = await context.load(session, claim)
        if claimed is None:
            return
        if problem is not None:
            retries = claimed.job.poll_errors + 1
            if transient and retries < _FETCH_RETRIES:
                log.info("output fetch retry", job_id=claim.job_id, reason=problem)
                await release(
                    session, claim, next_action_in=2.0 * retries, values={"poll_errors": retries}
                )
            else:
                await context.fail_job(
                    claimed, claim, ErrorCode.OUTPUT_FETCH_FAILED, problem, claimed.job.provider
                )
            await session.commit()
            await context.after_commit(runtime, claim.job_id)
            return
        await _complete(claimed, claim, stored, runtime.catalog)
        await session.commit()
    await context.after_commit(runtime, claim.job_id)


async def _complete(
    claimed: context.Claimed, claim: Claim, stored: list[StoredImage], catalog: Catalog
) -> None:
    job, attempt = claimed.job, claimed.attempt
    assert attempt is not None
    session = claimed.repo.session
    await session.execute(delete(Output).where(Output.job_id == job.id))
    for index, image in enumerate(stored):
        session.add(
            Output(
                job_id=job.id,
                index=index,
                storage_key=image.key,
                content_type=image.content_type,
                width=image.width,
                height=image.height,
                bytes=image.size,
                sha256=image.sha256,
                upstream_url=image.upstream_url,
            )
        )
    result = {
        "images": [
            {
                "storage_key": image.key,
                "content_type": image.content_type,
                "width": image.width,
                "height": image.height,
                "bytes": image.size,
                "sha256": image.sha256,
            }
            for image in stored
        ],
        "seed": attempt.seed,
    }
    actual = actual_cost(
        catalog,
        job.model,
        attempt.provider,
        NormalisedInput.from_json(job.input),
        [(image.width, image.height) for image in stored],
        reported=attempt.reported_cost_micros,
        estimate=job.estimated_cost_micros,
    )
    attempt.state = "completed"
    await claimed.repo.transition(
        job.id,
        claimed.state,
        states.COMPLETED,
        epoch=claim.epoch,
        values={"result": result, "actual_cost_micros": actual, "poll_errors": 0},
        detail={"images": len(stored)},
    )


async def _copy(
    runtime: Runtime, provider_name: str, ref: UpstreamRef, output: UpstreamOutput, index: int
) -> StoredImage:
    data = await _fetch(runtime, provider_name, ref, output)
    if len(data) > runtime.settings.output_max_bytes:
        raise BadOutput(f"output {index} is larger than {runtime.settings.output_max_bytes} bytes")
    content_type, extension, width, height = _inspect(data, index)
    key = f"{ref.request.job_id}/{index}.{extension}"
    await runtime.storage.put(key, data, content_type)
    upstream_url = None if output.url.startswith(("data:", "simulator:")) else output.url
    return StoredImage(key, content_type, width, height, len(data), sha256_hex(data), upstream_url)


async def _fetch(
    runtime: Runtime, provider_name: str, ref: UpstreamRef, output: UpstreamOutput
) -> bytes:
    provider: object = runtime.providers.get(provider_name)
    if isinstance(provider, OutputSource):
        return await provider.fetch_output(ref, output)
    if output.url.startswith("data:"):
        try:
            return base64.b64decode(output.url.partition(",")[2], validate=True)
        except ValueError as exc:
            raise BadOutput("the upstream's data URL is not valid base64") from exc
    if not output.url.startswith(("https://", "http://")):
        raise BadOutput(f"unsupported output URL scheme in {output.url[:40]!r}")
    try:
        response = await send(
            runtime.http,
            "GET",
            output.url,
            phase=Phase.POLL,
            what=f"{provider_name} output",
            deadlines=Deadlines(connect=5, read=30, total=120),
            max_bytes=runtime.settings.output_max_bytes,
        )
    except ProtocolViolation as exc:  # e.g. larger than the cap
        raise BadOutput(exc.message) from exc
    except TransientError as exc:
        if exc.status in (404, 410):  # expired or already deleted upstream: it will not return
            raise BadOutput(exc.message) from exc
        raise
    return response.content


def _inspect(data: bytes, index: int) -> tuple[str, str, int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or ""
            width, height = image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadOutput(f"output {index} is not a readable image") from exc
    if fmt not in _FORMATS:
        raise BadOutput(f"output {index} has an unsupported format {fmt or 'unknown'}")
    content_type, extension = _FORMATS[fmt]
    return content_type, extension, width, height
