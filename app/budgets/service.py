"""Budgets: reserve a job's estimate at admission, settle or refund it when the job ends.

A team may have a monthly budget, and a key its own one within it (calendar months, UTC). The
``ledger`` table holds every movement and a balance is always a SUM over it (see
``app.models.ledger``); nothing is ever read, changed and written back.

Admission (``reserve``, inside the job's INSERT transaction):
- The amount held is the worst case of the route plan: its dearest candidate. Failover, and
  dispatch passing over a provider whose breaker is open, may move a job to any candidate of
  its plan, and the hold must cover that; so a settled job never costs more than it held unless
  the upstream itself bills more than the catalog's price.
- With a budget: serialise per team (``LedgerRepository.lock_team``), then check
  committed + hold <= budget for the team and for the key; otherwise 402 ``budget_exceeded``
  naming what remains. The lock is taken after the job row is written, so a transaction holding
  it never waits for another row lock (no deadlock), and is released at COMMIT.
- Unpriced candidates (no estimate): without any budget the job is admitted and holds 0 (its cost
  is reported as unknown). Under a budget a job whose cost cannot be bounded could overspend it
  without limit, so the safer rule applies: unpriced fallbacks behind a priced first choice are
  dropped from the job's route plan, and an unpriced first choice is refused with 402
  ``budget_unpriced`` naming the providers (rather than silently rerouted against the caller's
  strategy). A budget therefore never admits an unbounded cost.
- A job belongs to the month it was admitted in: its refund and settlement land in that month
  even when it ends after midnight on the 1st, so each month's sums stay balanced.

End of a job (``on_transition``, inside the terminal transition's transaction): the hold is
refunded, and a completed job's actual cost is settled. Each row is written at most once per job
(unique (job_id, kind), ``ON CONFLICT DO NOTHING``), so a replayed listener changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import Principal
from app.budgets.repository import Balance, Budgets, Committed, LedgerRepository
from app.errors import ApiError
from app.jobs import states
from app.jobs.repository import Hold
from app.kit.money import format_usd
from app.models import Job

if TYPE_CHECKING:
    from app.jobs.transitions import Transition


class BudgetExceeded(ApiError):
    status, code, title = 402, "budget_exceeded", "Budget exceeded"


class BudgetUnpriced(ApiError):
    status, code, title = 402, "budget_unpriced", "Cost cannot be estimated under a budget"


def month_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


def hold_for(route_plan: list[dict[str, Any]]) -> int:
    """The most the job may cost: the estimate of its dearest priced candidate."""
    estimates = [c.get("estimate_micros") for c in route_plan]
    return max((e for e in estimates if e is not None), default=0)


def hold(job: Job) -> Hold:
    """What ``reserve`` holds for a job when no budget applies (nothing is dropped or checked)."""
    return Hold(hold_for(job.route_plan), month_of(job.created_at))


async def reserve(session: AsyncSession, principal: Principal, job: Job) -> None:
    """Hold the job's estimate against its team's (and key's) monthly budget, or raise 402."""
    ledger = LedgerRepository(session)
    month = month_of(job.created_at)
    limits = await ledger.budgets(job.team_id, job.api_key_id)
    if limits.any:
        _drop_unpriced(job)
    amount = hold_for(job.route_plan)
    if limits.any:
        await session.flush()  # the job row first: see the lock's note on deadlocks
        await ledger.lock_team(job.team_id)
        committed = await ledger.committed(job.team_id, job.api_key_id, month)
        _check(limits, committed, amount, month)
    await ledger.record(
        job_id=job.id,
        team_id=job.team_id,
        api_key_id=job.api_key_id,
        kind="reserve",
        amount_micros=amount,
        month=month,
    )


def _drop_unpriced(job: Job) -> None:
    plan = job.route_plan
    unpriced = [c["provider"] for c in plan if c.get("estimate_micros") is None]
    if not unpriced:
        return
    if plan[0].get("estimate_micros") is None:
        names = ", ".join(unpriced)
        raise BudgetUnpriced(
            f"this request would run on providers without a known price ({names}) and a "
            "monthly budget applies; exclude them with routing.exclude or choose priced providers",
            extra={"unpriced_providers": unpriced},
        )
    # The stored plan is all the worker ever reads: it keeps only the priced candidates.
    job.route_plan = [c for c in plan if c.get("estimate_micros") is not None]


def _check(limits: Budgets, committed: Committed, amount: int, month: str) -> None:
    scopes = [
        ("team", limits.team_micros, committed.team_micros),
        ("key", limits.key_micros, committed.key_micros),
    ]
    refusals = [
        (scope, budget, max(0, budget - used))
        for scope, budget, used in scopes
        if budget is not None and used + amount > budget
    ]
    if not refusals:
        return
    scope, budget, remaining = min(refusals, key=lambda r: r[2])
    remaining_usd, amount_usd = format_usd(remaining), format_usd(amount)
    whose = "the team's" if scope == "team" else "this API key's"
    raise BudgetExceeded(
        f"{whose} monthly budget for {month} has {remaining_usd} USD remaining; "
        f"this request may cost up to {amount_usd} USD",
        extra={
            "remaining_usd": remaining_usd,
            "required_usd": amount_usd,
            "budget_usd": format_usd(budget),
            "budget_scope": scope,
            "month": month,
        },
    )


async def on_transition(session: AsyncSession, transition: Transition) -> None:
    """Settle the actual cost of a completed job; refund a failed or cancelled one."""
    if not transition.current.is_terminal:
        return
    job = transition.job
    ledger = LedgerRepository(session)
    held = await ledger.reservation(job.id)
    month = held.month if held is not None else month_of(job.created_at)
    row: dict[str, Any] = {"job_id": job.id, "team_id": job.team_id, "api_key_id": job.api_key_id}
    if held is not None:
        await ledger.record(
            **row, kind="refund", amount_micros=-held.amount_micros, month=month, once=True
        )
    if transition.current == states.COMPLETED:
        actual = job.actual_cost_micros or 0  # unpriced and unreported: nothing known to charge
        await ledger.record(**row, kind="settle", amount_micros=actual, month=month, once=True)


async def balance(
    session: AsyncSession, team_id: str, month: str, api_key_id: str | None = None
) -> Balance:
    """A team's (or one key's) spent and reserved figures for a month, for reports."""
    return await LedgerRepository(session).balance(team_id, month, api_key_id)


@dataclass(frozen=True, slots=True)
class BudgetLine:
    budget_micros: int | None
    balance: Balance

    @property
    def remaining_micros(self) -> int | None:
        if self.budget_micros is None:
            return None
        return max(0, self.budget_micros - self.balance.committed_micros)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    month: str
    team: BudgetLine
    key: BudgetLine


async def status(session: AsyncSession, team_id: str, api_key_id: str, month: str) -> BudgetStatus:
    """Where a team and one of its keys stand in a month: budget, spent, held, remaining."""
    ledger = LedgerRepository(session)
    limits = await ledger.budgets(team_id, api_key_id)
    return BudgetStatus(
        month,
        BudgetLine(limits.team_micros, await ledger.balance(team_id, month)),
        BudgetLine(limits.key_micros, await ledger.balance(team_id, month, api_key_id)),
    )
