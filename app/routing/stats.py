"""Observed statistics per provider and model: time to completion, success rate, jobs in flight.

Computed from the attempts table (``routing.repository``) over a sliding window: the newest
attempts that finished within ``stats_window_s``. Which outcomes count:

- success: the upstream produced the images (``succeeded``, or ``completed`` once stored);
- failure: not accepted, failed with ``upstream_error``/``upstream_timeout``, or a submit whose
  outcome stayed unknown;
- neither: moderation and invalid input (the request's fault, not the provider's), cancels.

Percentiles interpolate linearly between the closest ranks (as PostgreSQL's percentile_cont).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from app.providers.base import ErrorCode

SUCCEEDED_STATES = frozenset({"succeeded", "completed"})
FAILED_STATES = frozenset({"not_accepted", "unknown"})
PROVIDER_FAULTS = frozenset({ErrorCode.UPSTREAM_ERROR.value, ErrorCode.UPSTREAM_TIMEOUT.value})


@dataclass(frozen=True, slots=True)
class AttemptRow:
    provider: str
    model: str
    state: str
    error_code: str | None
    submitted_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Observed:
    successes: int = 0
    failures: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    in_flight: int = 0

    @property
    def samples(self) -> int:
        return self.successes + self.failures

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.samples if self.samples else None


NOTHING = Observed()


@dataclass(frozen=True, slots=True)
class ObservedStats:
    window_s: float = 0.0
    by_route: Mapping[tuple[str, str], Observed] = field(default_factory=dict)
    by_provider: Mapping[str, Observed] = field(default_factory=dict)

    def route(self, provider: str, model: str) -> Observed:
        return self.by_route.get((provider, model), NOTHING)

    def provider(self, provider: str) -> Observed:
        return self.by_provider.get(provider, NOTHING)


def outcome(state: str, error_code: str | None) -> bool | None:
    """True for a provider success, False for a provider failure, None when neither."""
    if state in SUCCEEDED_STATES:
        return True
    if state in FAILED_STATES:
        return False
    if state == "failed":
        return False if error_code in PROVIDER_FAULTS else None
    return None


def percentile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class _Tally:
    successes: int = 0
    failures: int = 0
    durations: list[float] = field(default_factory=list)

    def add(self, row: AttemptRow, ok: bool) -> None:
        if not ok:
            self.failures += 1
            return
        self.successes += 1
        if row.submitted_at is not None and row.finished_at is not None:
            self.durations.append((row.finished_at - row.submitted_at).total_seconds())

    def observed(self, in_flight: int) -> Observed:
        ordered = sorted(self.durations)
        return Observed(
            self.successes,
            self.failures,
            percentile(ordered, 0.50),
            percentile(ordered, 0.95),
            in_flight,
        )


def summarise(
    rows: Iterable[AttemptRow], in_flight: Mapping[tuple[str, str], int], window_s: float
) -> ObservedStats:
    routes: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    providers: dict[str, _Tally] = defaultdict(_Tally)
    for row in rows:
        ok = outcome(row.state, row.error_code)
        if ok is None:
            continue
        routes[(row.provider, row.model)].add(row, ok)
        providers[row.provider].add(row, ok)
    flying: dict[str, int] = defaultdict(int)
    for (provider, _), count in in_flight.items():
        flying[provider] += count
    return ObservedStats(
        window_s,
        {k: routes[k].observed(in_flight.get(k, 0)) for k in set(routes) | set(in_flight)},
        {k: providers[k].observed(flying.get(k, 0)) for k in set(providers) | set(flying)},
    )
