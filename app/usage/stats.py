"""Percentiles computed exactly as PostgreSQL's ``percentile_cont`` does (linear interpolation).

PostgreSQL: with n sorted values and fraction p, take position p * (n - 1), the values at its
floor and ceiling, and interpolate ``lo + (hi - lo) * (position - floor)`` in double precision.
The same arithmetic here gives the same double, so SQLite and PostgreSQL reports agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile_cont(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    low = ordered[lower]
    if lower == upper:
        return low
    return low + (ordered[upper] - low) * (position - lower)
