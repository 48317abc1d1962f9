"""Routing knobs: circuit breakers and observed statistics (``IMAGEGATE_ROUTING__*``).

The defaults suit a production gateway; tests set them small. A breaker opens on either signal:
``breaker_consecutive_failures`` in a row, or a failure ratio of at least
``breaker_failure_ratio`` over the last ``breaker_window_s`` once ``breaker_min_calls`` outcomes
were seen (so one failure out of two calls never opens it).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class RoutingSettings(BaseModel):
    breaker_consecutive_failures: int = Field(default=5, ge=1)
    breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    breaker_min_calls: int = Field(default=20, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    # A probe slot frees itself after this long, should its holder die before reporting back.
    breaker_probe_timeout_s: float = Field(default=90.0, gt=0)
    # Admission reads breaker states through an in-process snapshot at most this old; dispatch
    # always asks the shared store, so a stale snapshot costs at most a skipped candidate.
    breaker_view_ttl_s: float = Field(default=1.0, ge=0)
    # A job whose every candidate has an open breaker waits at most this long before it looks
    # again (never past its deadline).
    breaker_wait_cap_s: float = Field(default=30.0, gt=0)
    stats_window_s: float = Field(default=900.0, gt=0)
    stats_max_attempts: int = Field(default=5000, ge=10)  # newest attempts read per refresh
    stats_ttl_s: float = Field(default=5.0, ge=0)
