"""Per-job deadlines: an overdue job fails ``deadline_exceeded`` and its upstream job is cancelled.

Every job has ``deadline_at`` (the operator's ``job_deadline_s``, or the request's
``deadline_s`` up to ``job_deadline_max_s``). Dispatch fails an overdue queued job before
submitting it; the poll step fails an overdue job running upstream and then, after the commit,
asks the upstream to cancel it where the provider can (``Cancellable``), so an abandoned job
stops costing money. The upstream cancel is best effort: the job is already failed either way,
and a result arriving later is ignored.
"""

from __future__ import annotations

import structlog

from app.providers.base import Cancellable, Provider, UpstreamRef

log = structlog.get_logger("imagegate.worker")

REASON = "deadline passed"


async def cancel_abandoned_upstream(provider: Provider, ref: UpstreamRef, why: str) -> bool:
    """Cancel at its upstream a job imagegate has given up on (``why``), so it stops costing
    money; best effort. True when a cancel was sent and accepted."""
    if not isinstance(provider, Cancellable) or not ref.upstream_id:
        return False
    try:
        await provider.cancel(ref)
    except Exception as exc:
        log.warning("upstream cancel failed", why=why, error=str(exc)[:200])
        return False
    log.info("abandoned job cancelled upstream", why=why, upstream_id=ref.upstream_id)
    return True
