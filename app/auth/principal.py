"""``Principal``: who is calling, as the verifier resolved it from an API key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    team_id: str
    scopes: frozenset[str]
    # The key's own limits (None: the server default applies; a rate of 0 means unlimited).
    rate_limit_per_minute: int | None = None
    rate_limit_burst: int | None = None
    # When this presented secret stops working: the key's expiry, or a rolled secret's grace end.
    valid_until: datetime | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes
