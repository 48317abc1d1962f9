"""The dashboard in headless Chromium: sign in with an admin key, every panel shows the scripted
run's figures, a screenshot is kept, no console error, and no request leaves the machine."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from app.dashboard.format import percent, usd
from tests.conftest import Backend
from tests.dashboard.browser import chromium
from tests.dashboard.scenario import TEAMS, scripted_run

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


async def test_an_admin_sees_every_panel_filled_by_the_scripted_run(
    fresh_backend: Backend, tmp_path: Path
) -> None:
    async with (
        scripted_run(fresh_backend, tmp_path) as run,
        chromium(tmp_path / "chromium-profile") as browser,
    ):
        page = browser.page
        await page.goto(f"{run.base_url}/dashboard")
        assert page.url == f"{run.base_url}/dashboard/login"  # not signed in: the form

        await page.fill("#api_key", run.admin_key)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{run.base_url}/dashboard")
        await page.wait_for_load_state("networkidle")
        cookie = next(c for c in await browser.context.cookies() if c["name"] == "ig_dashboard")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/dashboard" and not cookie["secure"]  # plain http on loopback
        assert run.admin_key not in cookie["value"]

        by_provider, by_team = run.spend("provider"), run.spend("team")
        total = sum(by_provider.values())
        assert set(by_provider) == {"simulator", "fal"} and total > 0

        # Summary.
        assert await page.inner_text("#kpi-spend") == usd(total)

        # Spend per day: one column a day of the 30, five days with spend, stacked by provider.
        days = page.locator("#spend-per-day g.day")
        assert await days.count() == 30
        micros = [
            int(m or 0) for m in await days.evaluate_all("gs => gs.map(g => g.dataset.micros)")
        ]
        assert sum(micros) == total
        assert sum(1 for m in micros if m) == 5
        assert set(
            await page.locator("#spend-per-day rect.seg").evaluate_all(
                "rs => rs.map(r => r.dataset.provider)"
            )
        ) == {"simulator", "fal"}
        for provider, spent in by_provider.items():
            legend = page.locator(f'#spend-per-day .legend-item[data-provider="{provider}"]')
            assert await legend.locator(".legend-value").inner_text() == usd(spent)

        # Jobs by status.
        for status, count in run.statuses().items():
            row = page.locator(f'#jobs-by-status .status-row[data-status="{status}"]')
            assert await row.locator(".status-count").inner_text() == str(count)
        assert run.statuses() == {"completed": 10, "failed": 3, "cancelled": 1}

        # Spend by team and by key (one key a team in this run).
        for team, key_name in TEAMS.items():
            team_row = page.locator("#spend-by-team tbody tr", has_text=team)
            assert await team_row.locator("td.strong").inner_text() == usd(by_team[team])
            key_row = page.locator("#spend-by-key tbody tr", has_text=key_name)
            assert await key_row.locator("td.strong").inner_text() == usd(by_team[team])
            assert team in await key_row.inner_text()

        # Provider health: breaker, observed latency and success rate, price, spend.
        outcomes = Counter((job["provider"], job["status"]) for job in run.jobs)
        for provider, price in (("simulator", "$0.003"), ("fal", "$0.012")):
            cells = await page.locator(
                f'#provider-health tr[data-provider="{provider}"] td'
            ).all_inner_texts()
            breaker, p50, p95, success, _samples, _flying, shown_price, spend = cells
            assert breaker.strip() == "Closed"
            assert p50 != "—" and p95 != "—"
            ok, failed = outcomes[(provider, "completed")], outcomes[(provider, "failed")]
            assert success == percent(ok / (ok + failed))
            assert shown_price == price
            assert spend == usd(by_provider[provider])

        # Recent jobs: the twelve newest, each completed one with its stored image loaded.
        tiles = page.locator("#recent-jobs .tile")
        assert await tiles.count() == 12
        newest = sorted(run.jobs, key=lambda job: job["job_id"], reverse=True)[:12]
        assert await tiles.evaluate_all("ts => ts.map(t => t.dataset.job)") == [
            job["job_id"] for job in newest
        ]
        images = await page.locator("#recent-jobs .tile[data-status=completed] img").evaluate_all(
            "is => is.map(i => [i.complete, i.naturalWidth, new URL(i.src).pathname])"
        )
        assert len(images) == sum(1 for job in newest if job["status"] == "completed")
        assert all(
            done and width > 0 and path.startswith("/v1/files/") for done, width, path in images
        )
        assert await page.locator("#recent-jobs .tile[data-status=failed] .tile-error").count()

        ARTIFACTS.mkdir(exist_ok=True)
        name = "dashboard.png" if fresh_backend.name == "sqlite" else "dashboard-postgres.png"
        await page.screenshot(path=str(ARTIFACTS / name), full_page=True)

        # Sign out: the session ends, the page asks for a key again.
        await page.click("#logout")
        await page.wait_for_url(f"{run.base_url}/dashboard/login")
        await page.goto(f"{run.base_url}/dashboard")
        assert page.url == f"{run.base_url}/dashboard/login"

    assert browser.console_errors == []
    assert browser.outside == []
    assert browser.requests and all(
        url.startswith(f"{run.base_url}/") for url in browser.requests
    ), browser.requests
