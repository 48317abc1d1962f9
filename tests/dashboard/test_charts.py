"""The dashboard's chart geometry and number formatting, as pure functions."""

from __future__ import annotations

import math
import tomllib
from datetime import date, timedelta
from fnmatch import fnmatch
from pathlib import Path

import pytest

from app.dashboard.charts import (
    DONUT_RADIUS,
    HEIGHT,
    PALETTE,
    axis_label,
    donut,
    nice_step,
    provider_colors,
    stacked_days,
)
from app.dashboard.format import percent, seconds, usd, usd_exact

DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(10)]


@pytest.mark.parametrize(
    ("maximum", "step"),
    [(0.0, 1.0), (0.015, 0.005), (0.066, 0.02), (1.0, 0.25), (7.3, 2.0), (180.0, 50.0)],
)
def test_axis_steps_are_round_numbers(maximum: float, step: float) -> None:
    assert nice_step(maximum) == pytest.approx(step)
    assert maximum / nice_step(maximum) <= 4


def test_stacked_days_draw_each_day_to_scale_in_stable_colours() -> None:
    colors = provider_colors(["simulator", "fal"])
    assert colors == {"fal": PALETTE[0], "simulator": PALETTE[1]}
    spend = {
        (DAYS[2], "fal"): (24_000, 2),
        (DAYS[2], "simulator"): (6_000, 2),
        (DAYS[9], "simulator"): (3_000, 1),
    }
    chart = stacked_days(DAYS, spend, colors)
    assert not chart.empty
    assert [c.day for c in chart.columns] == DAYS
    assert [c.total_micros for c in chart.columns] == [0, 0, 30_000] + [0] * 6 + [3_000]
    busy = chart.columns[2]
    assert [s.provider for s in busy.segments] == ["fal", "simulator"]
    fal, sim = busy.segments
    assert fal.height == pytest.approx(4 * sim.height)
    assert sim.y + sim.height == pytest.approx(fal.y)  # stacked: one on top of the other
    assert fal.y + fal.height == pytest.approx(chart.plot_bottom)
    top = chart.ticks[-1]
    assert top.y <= sim.y + 1e-9  # the axis reaches the tallest day
    assert [t.label for t in chart.ticks] == ["$0", "$0.01", "$0.02", "$0.03"]
    assert "fal $0.024 (2 jobs)" in busy.tooltip and "$0.03" in busy.tooltip
    assert chart.x_labels[-1].label == "10 Nov"  # the latest day is always labelled
    assert [item.provider for item in chart.legend] == ["fal", "simulator"]
    assert chart.legend[1].micros == 9_000
    assert 0 < chart.plot_top < chart.plot_bottom < HEIGHT


def test_axis_labels_share_the_decimals_of_their_step() -> None:
    assert [axis_label(i * 0.005, 0.005) for i in range(4)] == ["$0", "$0.005", "$0.010", "$0.015"]
    assert axis_label(50.0, 25.0) == "$50" and axis_label(7.5, 2.5) == "$7.50"
    assert axis_label(2000.0, 500.0) == "$2,000"


def test_an_empty_period_is_an_empty_chart() -> None:
    chart = stacked_days(DAYS, {}, provider_colors(["simulator"]))
    assert chart.empty and chart.legend == ()
    assert all(not c.segments for c in chart.columns)


def test_the_status_ring_splits_the_circle_by_count() -> None:
    circumference = 2 * math.pi * DONUT_RADIUS
    arcs = donut([("completed", 3), ("failed", 1), ("pending", 0)], gap=0)
    assert [a.key for a in arcs] == ["completed", "failed"]
    lengths = [float(a.dash.split()[0]) for a in arcs]
    assert lengths[0] == pytest.approx(circumference * 0.75, abs=0.01)
    assert arcs[1].offset == pytest.approx(-circumference * 0.75)
    (whole,) = donut([("completed", 5)])
    assert float(whole.dash.split()[0]) == pytest.approx(circumference, abs=0.01)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (None, "—"),
        (0, "$0"),
        (3_000, "$0.003"),
        (12_000, "$0.012"),
        (66_000, "$0.066"),
        (500_000, "$0.50"),
        (1_234_567, "$1.23"),
        (1_234_000_000, "$1,234"),
        (-12_000, "-$0.012"),
        (1, "$0.00"),
    ],
)
def test_money_is_written_as_precisely_as_its_size_needs(micros: int | None, text: str) -> None:
    assert usd(micros) == text


def test_exact_amounts_rates_and_durations() -> None:
    assert usd_exact(12_000) == "0.012000 USD" and usd_exact(None) == "unpriced"
    assert percent(2 / 3) == "66.7%" and percent(None) == "—"
    assert seconds(0.4213) == "421 ms" and seconds(2.04) == "2.0 s" and seconds(90) == "1.5 min"


def test_every_template_and_static_file_ships_in_the_wheel() -> None:
    """The image installs the package (not the source tree): each file needs a package-data
    pattern, or the dashboard would fail only once deployed."""
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["app"]
    app = root / "app"
    files = [
        path.relative_to(app).as_posix()
        for folder in ("dashboard/templates", "dashboard/static")
        for path in (app / folder).iterdir()
    ]
    assert files
    assert [f for f in files if not any(fnmatch(f, p) for p in patterns)] == []
