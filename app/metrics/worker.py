"""Worker metrics: how late each claimed step was picked up after it fell due (the poll lag)."""

from __future__ import annotations

from collections.abc import Iterable

from app.metrics import jobs as _jobs  # noqa: F401 - registers the job counters' session hooks
from app.metrics.registry import CLAIM_LAG_SECONDS
from app.worker.leases import Claim


def observe_claims(claims: Iterable[Claim]) -> None:
    for claim in claims:
        if claim.lag_s is not None:
            CLAIM_LAG_SECONDS.labels(claim.stage.value).observe(claim.lag_s)
