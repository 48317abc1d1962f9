"""Headless Chromium for the dashboard tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

Playwright never downloads a browser here: it launches the system Chromium by path, on a fresh
profile folder, with everything that could phone home switched off. Every request the page makes
goes through a route guard: loopback requests pass, anything else is recorded and aborted, so a
test can assert that nothing left the machine. Console errors and uncaught page errors are
recorded too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, Route, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about"}


@dataclass
class Browser:
    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    outside: list[str] = field(default_factory=list)  # requests that tried to leave loopback
    console_errors: list[str] = field(default_factory=list)


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname in LOCAL_HOSTS


@asynccontextmanager
async def chromium(profile: Path, width: int = 1440, height: int = 900) -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/ensure-chromium (Debian's chromium package)",
            pytrace=False,
        )
    profile.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),  # a fresh --user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": width, "height": height},
            color_scheme="light",
            locale="en-GB",
            timezone_id="UTC",
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            browser = Browser(context, page)

            async def guard(route: Route) -> None:
                url = route.request.url
                browser.requests.append(url)
                if _is_local(url):
                    await route.continue_()
                else:
                    browser.outside.append(url)
                    await route.abort("blockedbyclient")

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    browser.console_errors.append(message.text)

            await context.route("**/*", guard)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: browser.console_errors.append(f"pageerror: {exc}"))
            yield browser
        finally:
            await context.close()
