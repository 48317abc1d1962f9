"""Checking a client's webhook URL at admission: scheme, then the egress policy.

The URL is resolved once and every address must be allowed (no loopback, private, link-local,
metadata, ... unless the operator allowlisted it), so a request naming an internal target is
refused with a 422 naming ``webhook``. A host that does not resolve right now is accepted: DNS may
be briefly down, and every delivery try checks the URL again before connecting.
"""

from __future__ import annotations

import structlog

from app.errors import invalid
from app.kit.egress import EgressError, EgressRefused, check_url
from app.runtime import Runtime

log = structlog.get_logger(__name__)


async def check_webhook_url(runtime: Runtime, url: str | None) -> None:
    if url is None:
        return
    allowed = ("https://", "http://") if runtime.settings.allow_http_webhooks else ("https://",)
    if not url.lower().startswith(allowed):
        schemes = " or ".join(s.removesuffix("://") for s in allowed)
        raise invalid(["webhook"], f"must be an {schemes} URL")
    egress = runtime.egress
    try:
        await check_url(url, egress.webhooks.policy, egress.resolver)
    except EgressRefused as exc:
        raise invalid(["webhook"], f"is not allowed: {exc.reason}") from None
    except EgressError as exc:
        log.info("webhook host not checked at admission", reason=str(exc))
