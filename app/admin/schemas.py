"""Request and response shapes of ``/v1/admin/teams`` and ``/v1/admin/keys``.

Money is a decimal string of US dollars (``"250.00"``, at most 6 decimals). In updates a field
left out is unchanged and an explicit ``null`` clears it (``monthly_budget_usd: null`` removes a
budget). A key's ``rate_limit_per_minute`` of ``0`` exempts it from the server's default limit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal, cast

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from app.auth.keys import DEFAULT_SCOPES

Scope = Literal["images:write", "images:read", "usage:read", "admin"]
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
RatePerMinute = Annotated[int, Field(strict=True, ge=0, le=1_000_000)]
Burst = Annotated[int, Field(strict=True, ge=1, le=100_000)]
GraceSeconds = Annotated[int, Field(strict=True, ge=0, le=30 * 86_400)]

MAX_BUDGET_USD = Decimal(1_000_000_000)


_USD = re.compile(r"^[0-9]{1,10}(?:\.[0-9]{1,6})?$")


def budget_error(value: str) -> str | None:
    """Why ``value`` is not a budget amount, or None when it is one."""
    if not _USD.match(value.strip()):
        return (
            "must be a non-negative decimal string of US dollars with at most 6 decimals, "
            'such as "250.00"'
        )
    if Decimal(value.strip()) > MAX_BUDGET_USD:
        return f"must be at most {MAX_BUDGET_USD}"
    return None


def _budget(value: str) -> str:
    error = budget_error(value)
    if error is not None:
        raise ValueError(error)
    return value.strip()


UsdAmount = Annotated[str, Field(max_length=32, examples=["250.00"]), AfterValidator(_budget)]


def _default_scopes() -> list[Scope]:
    return [cast(Scope, scope) for scope in DEFAULT_SCOPES]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


Expiry = Annotated[AwareDatetime, AfterValidator(_utc)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamCreate(_In):
    name: Name
    monthly_budget_usd: UsdAmount | None = None


class TeamUpdate(_In):
    name: Name | None = None
    monthly_budget_usd: UsdAmount | None = None


class TeamOut(BaseModel):
    id: str
    name: str
    monthly_budget_usd: str | None
    created_at: str


class TeamList(BaseModel):
    data: list[TeamOut]
    next_cursor: str | None


class KeyCreate(_In):
    team_id: str = Field(max_length=100)
    name: Name = "default"
    scopes: list[Scope] = Field(default_factory=_default_scopes, min_length=1)
    expires_at: Expiry | None = None
    rate_limit_per_minute: RatePerMinute | None = None
    rate_limit_burst: Burst | None = None
    monthly_budget_usd: UsdAmount | None = None


class KeyUpdate(_In):
    name: Name | None = None
    scopes: list[Scope] | None = Field(default=None, min_length=1)
    expires_at: Expiry | None = None
    rate_limit_per_minute: RatePerMinute | None = None
    rate_limit_burst: Burst | None = None
    monthly_budget_usd: UsdAmount | None = None


class KeyRoll(_In):
    grace_period_s: GraceSeconds | None = Field(
        default=None, description="How long the old secret keeps working; default 24 h."
    )


KeyStatus = Literal["active", "expired", "revoked"]


class KeyOut(BaseModel):
    id: str
    team_id: str
    team_name: str | None
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it; not a secret.")
    scopes: list[str]
    status: KeyStatus
    rate_limit_per_minute: int | None
    rate_limit_burst: int | None
    monthly_budget_usd: str | None
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    created_at: str
    previous_secret_expires_at: str | None = Field(
        description="After a roll, when the old secret stops working."
    )


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The full API key. Shown only in this answer; store it now.")


class KeyList(BaseModel):
    data: list[KeyOut]
    next_cursor: str | None
