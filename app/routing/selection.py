"""Choosing the candidate to submit to at dispatch, past any open breaker.

The job's stored plan is walked from the next untried position. A candidate whose breaker
refuses (open, or half-open with its one probe already out) is passed over for the next one;
the chosen candidate moves up to the current position so that the plan keeps reading as the
order of attempts, and the candidates passed over stay behind it for a later failover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.providers.base import Provider
from app.routing.breaker import Ticket
from app.routing.health import Health


@dataclass(frozen=True, slots=True)
class Chosen:
    candidate: dict[str, Any]
    provider: Provider
    ticket: Ticket  # report the submit's outcome under it (it may be the half-open probe)
    plan: list[dict[str, Any]]  # the route plan with the choice at the current position


@dataclass(frozen=True, slots=True)
class AllOpen:
    """Every remaining candidate's breaker refused; worth asking again in ``retry_in`` s."""

    retry_in: float


async def choose(
    health: Health,
    providers: Mapping[str, Provider],
    plan: Sequence[dict[str, Any]],
    position: int,
) -> Chosen | AllOpen | None:
    """The first remaining candidate whose breaker admits a submit; ``None`` if none is left."""
    soonest: float | None = None
    for index in range(position, len(plan)):
        candidate = plan[index]
        provider = providers.get(candidate["provider"])
        if provider is None:
            continue  # no longer configured
        ticket = await health.acquire(provider.name)
        if ticket.allowed:
            rest = [c for i, c in enumerate(plan) if i >= position and i != index]
            return Chosen(candidate, provider, ticket, [*plan[:position], candidate, *rest])
        soonest = ticket.retry_in if soonest is None else min(soonest, ticket.retry_in)
    return None if soonest is None else AllOpen(soonest)
