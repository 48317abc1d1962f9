"""Money as integer micro-dollars (1 USD = 1,000,000), rendered as a decimal string in the API."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000


class MoneyError(ValueError):
    pass


def usd_to_micros(value: str | Decimal | int | float) -> int:
    """Parse a USD amount; fractions of a micro-dollar round up (we never under-charge)."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise MoneyError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    return int((amount * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def format_usd(micros: int | None) -> str | None:
    """``12000`` -> ``"0.012000"``; ``None`` stays ``None`` (an unknown price is never invented)."""
    if micros is None:
        return None
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{frac:06d}"
