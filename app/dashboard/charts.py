"""Chart geometry for the dashboard's inline SVG, computed on the server (no chart script).

``stacked_days`` lays out spend per day stacked by provider: one column per day of the period
(empty days included, so gaps show), a y axis on "nice" dollar ticks, and a tooltip per day.
The template only draws the rectangles and labels given here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from app.dashboard.format import usd

# Colour-blind-friendly, mid-saturation hues that hold 3:1 against white and the dark theme.
PALETTE = (
    "#4f6bed",  # indigo
    "#14a38b",  # teal
    "#e08a1e",  # amber
    "#d6457a",  # rose
    "#3a9bd9",  # sky
    "#8a63d2",  # violet
    "#6b9e2f",  # olive
    "#c2573a",  # brick
)

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 30


def provider_colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per provider name (sorted), the same in every panel."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


@dataclass(frozen=True, slots=True)
class Segment:
    provider: str
    color: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Column:
    day: date
    x: float
    width: float
    total_micros: int
    jobs: int
    segments: tuple[Segment, ...]
    tooltip: str


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class XLabel:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class LegendItem:
    provider: str
    color: str
    micros: int


@dataclass(frozen=True, slots=True)
class StackedChart:
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    columns: tuple[Column, ...]
    ticks: tuple[Tick, ...]
    x_labels: tuple[XLabel, ...]
    legend: tuple[LegendItem, ...]

    @property
    def empty(self) -> bool:
        return not any(c.total_micros for c in self.columns)


def nice_step(maximum: float, ticks: int = 4) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving at most ``ticks`` intervals."""
    if maximum <= 0:
        return 1.0
    raw = maximum / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def axis_label(value_usd: float, step_usd: float) -> str:
    """Every tick with the decimals its step needs: $0, $0.005, $0.010, $0.015 (or $2.50)."""
    if value_usd == 0:
        return "$0"
    exponent = Decimal(str(step_usd)).normalize().as_tuple().exponent
    decimals = max(0, -exponent) if isinstance(exponent, int) else 2
    decimals = 2 if decimals == 1 else decimals  # money reads $2.50, not $2.5
    return f"${value_usd:,.{decimals}f}"


def stacked_days(
    days: Sequence[date],
    spend: Mapping[tuple[date, str], tuple[int, int]],
    colors: Mapping[str, str],
) -> StackedChart:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = {d: sum(m for (day, _), (m, _) in spend.items() if day == d) for d in days}
    top_usd = max(totals.values(), default=0) / 1_000_000
    step = nice_step(top_usd)
    scale_usd = max(step * math.ceil(top_usd / step), step) if top_usd else step
    ticks = tuple(
        Tick(TOP + plot_h - plot_h * (i * step) / scale_usd, axis_label(i * step, step))
        for i in range(round(scale_usd / step) + 1)
    )
    slot = plot_w / max(1, len(days))
    bar = max(1.0, min(slot * 0.72, 36.0))
    order = sorted(colors)
    columns = []
    for index, day in enumerate(days):
        x = LEFT + index * slot + (slot - bar) / 2
        y = float(TOP + plot_h)
        segments = []
        parts = []
        jobs = 0
        for provider in order:
            micros, count = spend.get((day, provider), (0, 0))
            if not micros and not count:
                continue
            jobs += count
            parts.append(f"{provider} {usd(micros)} ({count} jobs)")
            height = plot_h * (micros / 1_000_000) / scale_usd
            y -= height
            segments.append(Segment(provider, colors[provider], x, y, bar, height))
        label = day.strftime("%a %d %b")
        tooltip = f"{label}: {usd(totals[day])}" + (f" — {', '.join(parts)}" if parts else "")
        columns.append(Column(day, x, bar, totals[day], jobs, tuple(segments), tooltip))
    every = max(1, math.ceil(len(days) / 8))
    x_labels = tuple(
        XLabel(LEFT + i * slot + slot / 2, d.strftime("%d %b"))
        for i, d in enumerate(days)
        if (len(days) - 1 - i) % every == 0
    )
    by_provider = {p: sum(m for (_, q), (m, _) in spend.items() if q == p) for p in order}
    legend = tuple(
        LegendItem(p, colors[p], by_provider[p])
        for p in sorted(order, key=lambda p: -by_provider[p])
        if by_provider[p]
    )
    return StackedChart(
        WIDTH,
        HEIGHT,
        LEFT,
        WIDTH - RIGHT,
        TOP,
        TOP + plot_h,
        tuple(columns),
        ticks,
        x_labels,
        legend,
    )


@dataclass(frozen=True, slots=True)
class Arc:
    key: str
    dash: str  # stroke-dasharray: the arc's length, then the rest of the circle
    offset: float  # stroke-dashoffset: where the arc starts


DONUT_RADIUS = 52.0


def donut(parts: Sequence[tuple[str, int]], gap: float = 2.0) -> tuple[Arc, ...]:
    """Arcs of a ring chart (radius ``DONUT_RADIUS``), one per non-empty part, in order."""
    total = sum(n for _, n in parts)
    circumference = 2 * math.pi * DONUT_RADIUS
    shown = [(key, n) for key, n in parts if n > 0]
    arcs = []
    start = 0.0
    for key, n in shown:
        length = circumference * n / total
        visible = max(0.5, length - gap) if len(shown) > 1 else length
        arcs.append(Arc(key, f"{visible:.2f} {circumference - visible:.2f}", -start))
        start += length
    return tuple(arcs)
