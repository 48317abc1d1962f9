"""The public job object: built once per change as a cacheable document, signed per response.

The cached document holds storage keys, not URLs, because signed URLs expire; ``render`` signs
them for each answer. ``_team`` travels inside the document so a cache hit can still be
authorised without touching the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from app.kit.money import format_usd
from app.kit.timeutil import rfc3339
from app.models import Attempt, Job
from app.storage import UrlSigner

TEAM_FIELD = "_team"
SEQ_FIELD = "_seq"


def _error(code: str | None, message: str | None, provider: str | None) -> dict[str, Any] | None:
    if code is None:
        return None
    error: dict[str, Any] = {"code": code, "message": message or code}
    if provider:
        error["provider"] = provider
    return error


def _attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "provider": attempt.provider,
        "upstream_id": attempt.upstream_id,
        "status": attempt.state,
        "submitted_at": rfc3339(attempt.submitted_at),
        "finished_at": rfc3339(attempt.finished_at),
        "error": _error(attempt.error_code, attempt.error_message, None),
    }


def job_document(job: Job, attempts: Sequence[Attempt]) -> dict[str, Any]:
    path = f"/v1/images/{job.id}"
    return {
        "job_id": job.id,
        "status": job.status,
        "stage": job.stage,
        "model": job.model,
        "provider": job.provider,
        "input": job.input,
        "result": job.result,
        "error": _error(job.error_code, job.error_message, job.error_provider),
        "cost": {
            "estimated_usd": format_usd(job.estimated_cost_micros),
            "actual_usd": format_usd(job.actual_cost_micros),
            "currency": "USD",
        },
        "attempts": [_attempt(a) for a in attempts],
        "metadata": job.meta,
        "cached": job.reused_from is not None,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "started_at": rfc3339(job.started_at),
        "completed_at": rfc3339(job.completed_at),
        "urls": {"get": path, "cancel": path, "events": f"{path}/events"},
        TEAM_FIELD: job.team_id,
        SEQ_FIELD: job.event_seq,
    }


def render(document: dict[str, Any], signer: UrlSigner, base_url: str) -> dict[str, Any]:
    """The answer for one client: private fields dropped, image URLs signed and absolute."""
    out = {k: v for k, v in document.items() if not k.startswith("_")}
    result = out.get("result")
    if result and result.get("images"):
        images = []
        for image in result["images"]:
            public = {k: v for k, v in image.items() if k not in ("storage_key", "sha256")}
            key = image.get("storage_key")
            public["url"] = base_url + signer.sign(key) if key else None
            images.append(public)
        out["result"] = {**result, "images": images}
    return out


def dumps(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)
