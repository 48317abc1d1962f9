"""What the dashboard page shows, as typed values the templates render (money in micro-dollars)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from app.dashboard.charts import Arc, StackedChart
from app.dashboard.repository import RecentRow


@dataclass(frozen=True, slots=True)
class Viewer:
    key_id: str
    key_name: str
    key_prefix: str
    team: str


@dataclass(frozen=True, slots=True)
class Kpis:
    spend_micros: int
    priced_jobs: int
    completed: int
    failed: int
    cancelled: int
    in_flight: int
    images: int

    @property
    def success_rate(self) -> float | None:
        finished = self.completed + self.failed
        return self.completed / finished if finished else None

    @property
    def average_micros(self) -> int | None:
        return round(self.spend_micros / self.priced_jobs) if self.priced_jobs else None


@dataclass(frozen=True, slots=True)
class ShareRow:
    label: str
    detail: str
    micros: int
    jobs: int
    share: float  # of the largest row, 0..1, for the bar


@dataclass(frozen=True, slots=True)
class StatusRow:
    status: str
    count: int
    share: float  # of all jobs in the period


@dataclass(frozen=True, slots=True)
class ProviderRow:
    name: str
    color: str
    breaker: str  # closed | half_open | open
    retry_in_s: float
    p50_s: float | None
    p95_s: float | None
    success_rate: float | None
    samples: int
    in_flight: int
    price_micros: int | None  # one 1024x1024 image
    spend_micros: int  # in the period


@dataclass(frozen=True, slots=True)
class RecentJob:
    row: RecentRow
    thumbnail_url: str | None
    color: str


@dataclass(frozen=True, slots=True)
class Dashboard:
    viewer: Viewer
    days: int
    since: date
    generated_at: datetime
    kpis: Kpis
    chart: StackedChart
    statuses: tuple[StatusRow, ...]
    status_ring: tuple[Arc, ...]
    teams: tuple[ShareRow, ...]
    keys: tuple[ShareRow, ...]
    providers: tuple[ProviderRow, ...]
    health_window_s: float
    recent: tuple[RecentJob, ...]
