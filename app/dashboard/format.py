"""How the dashboard writes numbers: money from micro-dollars, rates, durations, ages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from app.kit.money import MICROS_PER_USD


def usd(micros: int | None) -> str:
    """``$1,234`` / ``$12.34`` / ``$0.012``: as precise as the amount's size needs."""
    if micros is None:
        return "—"
    amount = Decimal(micros) / MICROS_PER_USD
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0:
        return "$0"
    if amount >= 1000:
        return f"{sign}${amount:,.0f}"
    if amount >= 1:
        return f"{sign}${amount:,.2f}"
    text = f"{amount:.4f}".rstrip("0")
    if len(text.partition(".")[2]) < 2:
        text = f"{amount:.2f}"
    return f"{sign}${text}"


def usd_exact(micros: int | None) -> str:
    """The exact amount, for tooltips: ``0.012000 USD``."""
    if micros is None:
        return "unpriced"
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{'-' if micros < 0 else ''}{whole}.{frac:06d} USD"


def percent(rate: float | None, digits: int = 1) -> str:
    if rate is None:
        return "—"
    return f"{rate * 100:.{digits}f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def number(value: int) -> str:
    return f"{value:,}"


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "—"
    delta = ((now or datetime.now(UTC)) - when).total_seconds()
    if delta < 60:
        return "just now"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    return f"{int(delta // 86400)} d ago"


def iso(when: datetime | None) -> str:
    return "" if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
