"""``POST /v1/providers/{name}/webhook``: upstream callbacks (signature-checked, no API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.errors import ApiError, NotFound, Unauthorized
from app.inbound.service import Outcome, apply_webhook
from app.providers.base import WebhookReceiver, WebhookRefused
from app.web.deps import RuntimeDep
from app.web.responses import Json

router = APIRouter(prefix="/v1/providers", tags=["providers"])
MAX_BODY = 1024 * 1024


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Payload too large"


@router.post("/{name}/webhook")
async def provider_webhook(
    name: str,
    request: Request,
    runtime: RuntimeDep,
    job_id: Annotated[str | None, Query(max_length=40)] = None,
) -> Json:
    """An upstream's job update. Verified updates apply at once; unsigned ones trigger a poll."""
    provider: object = runtime.providers.get(name)
    if not isinstance(provider, WebhookReceiver) or provider is None:
        raise NotFound(f"no provider {name!r} receives webhooks here")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise PayloadTooLarge("webhook bodies are limited to 1 MB")
    try:
        update = provider.parse_webhook(request.headers, body)
    except WebhookRefused as exc:
        raise Unauthorized(f"webhook refused: {exc}") from None
    applied = await apply_webhook(runtime, runtime.providers[name], update, job_id)
    status = 503 if applied.outcome is Outcome.BUSY else 200
    headers = {"Retry-After": "1"} if status == 503 else None
    return Json({"outcome": applied.outcome.value}, status_code=status, headers=headers)
