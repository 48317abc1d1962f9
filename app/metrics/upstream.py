"""Upstream call metrics: latency and failures of every HTTP call to a provider.

``app.providers.http.send`` reports each call here once, with the provider and operation it
belongs to. Adapters name every call ``"<provider> <what>"`` (``"fal status"``), so the labels
come from that name unless the caller gives them; the output copy (``"<provider> output"``) is
the ``fetch`` operation.
"""

from __future__ import annotations

from app.metrics.registry import UPSTREAM_ERRORS, UPSTREAM_SECONDS
from app.providers.base import (
    NotAccepted,
    OutcomeUnknown,
    ProtocolViolation,
    ProviderError,
    Rejected,
    TransientError,
)

OPERATIONS = frozenset({"submit", "poll", "cancel", "fetch"})

_KINDS: tuple[tuple[type[ProviderError], str], ...] = (
    (NotAccepted, "not_accepted"),
    (OutcomeUnknown, "outcome_unknown"),
    (Rejected, "rejected"),
    (TransientError, "transient"),
    (ProtocolViolation, "protocol"),
)


def labels_for(what: str, phase: str) -> tuple[str, str]:
    """(provider, operation) of a call named ``"<provider> <what>"`` in ``phase``."""
    provider, _, call = what.partition(" ")
    operation = "fetch" if call == "output" else phase
    return provider or "unknown", operation if operation in OPERATIONS else "poll"


def error_kind(error: ProviderError) -> str:
    return next((kind for cls, kind in _KINDS if isinstance(error, cls)), "other")


def observe_call(
    provider: str, operation: str, seconds: float, error: ProviderError | None = None
) -> None:
    UPSTREAM_SECONDS.labels(provider, operation).observe(seconds)
    if error is not None:
        status = str(error.status) if error.status is not None else "none"
        UPSTREAM_ERRORS.labels(provider, operation, error_kind(error), status).inc()
