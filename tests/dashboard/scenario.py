"""A scripted run for the dashboard: three teams, two providers, completed, failed and cancelled
jobs with real costs, spread over the last days.

Providers: the built-in simulator ($0.003 an image) and a fal emulator over real loopback HTTP
($0.012 per megapixel, from the shipped catalog). Failures are switched on per phase (the
simulator's failure rate, the emulator's knob) so every outcome is deterministic. Once all jobs
are terminal, some are moved back in time by whole days (``created_at``/``completed_at`` in
SQL) so the spend chart has several days to show; nothing else about them changes.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from app.auth.service import issue_key
from app.kit.money import usd_to_micros
from app.models import Job
from app.providers.simulator import SimulatorProvider
from app.setup import ADMIN_SCOPES
from tests.conftest import Backend, Gateway, start_served_gateway
from tests.emulators.fal import FalEmulator
from tests.emulators.support import Knobs
from tests.helpers import Client
from tests.providers.upstreams import UPSTREAMS

TEAMS = {"design": "web-app", "growth": "batch-renders", "research": "notebooks"}
PROMPTS = (
    "a red fox in fresh snow, golden hour",
    "isometric city block at dusk, soft neon",
    "a bowl of ramen, studio lighting, top view",
    "watercolor lighthouse on a cliff, morning fog",
    "retro poster of a mountain train, 1960s",
    "macro shot of dew on a fern leaf",
    "a cozy reading nook with a cat, warm light",
    "minimalist logo sketch of a paper crane",
)


@dataclass
class Run:
    gateway: Gateway
    base_url: str
    admin_key: str
    keys: dict[str, str]  # team -> key
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def spend(self, by: str) -> dict[str, int]:
        """Micro-dollars spent by provider or team, from the jobs' own documents."""
        totals: dict[str, int] = defaultdict(int)
        for job in self.jobs:
            actual = job["cost"]["actual_usd"]
            if actual is not None:
                totals[job["provider"] if by == "provider" else job["_team"]] += usd_to_micros(
                    actual
                )
        return dict(totals)

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for job in self.jobs:
            counts[job["status"]] += 1
        return dict(counts)


@asynccontextmanager
async def scripted_run(backend: Backend, tmp: Path) -> AsyncIterator[Run]:
    emulator = FalEmulator()
    emulator.reset(Knobs(latency=(0.05, 0.12), seed=5))
    with emulator.serve() as fal_url:
        async for gateway in start_served_gateway(
            backend,
            tmp,
            providers={"fal": UPSTREAMS["fal"].settings(emulator, fal_url)},
            simulator={"enabled": True, "latency_s": 0.05, "latency_jitter": 0.0},
            routing={"stats_ttl_s": 0, "breaker_view_ttl_s": 0},  # the page shows the latest
        ):
            run = Run(gateway, str(gateway.runtime.settings.public_base_url), "", {})
            await _keys(run)
            await _jobs(run, emulator)
            await _spread_over_days(run)
            yield run


async def _keys(run: Run) -> None:
    runtime = run.gateway.runtime
    async with runtime.sessions() as session:
        admin = await issue_key(
            session, runtime.hasher, team_name="platform", name="ops-dashboard", scopes=ADMIN_SCOPES
        )
        for team, name in TEAMS.items():
            issued = await issue_key(session, runtime.hasher, team_name=team, name=name)
            run.keys[team] = issued.key
        await session.commit()
    run.admin_key = admin.key


async def _jobs(run: Run, emulator: FalEmulator) -> None:
    """Three phases (all succeed, all fail, cancelled), each phase's jobs at once."""
    simulator = cast(SimulatorProvider, run.gateway.runtime.providers["simulator"])
    phases = {  # outcome -> [(team, provider, count)]
        "completed": [
            ("design", "simulator", 4),
            ("design", "fal", 1),
            ("growth", "fal", 3),
            ("research", "simulator", 2),
        ],
        "failed": [("growth", "fal", 2), ("research", "simulator", 1)],
        "cancelled": [("research", "simulator", 1)],
    }
    prompts = iter(PROMPTS * 4)
    for outcome, batches in phases.items():
        emulator.knobs.failure_rate = 1.0 if outcome == "failed" else 0.0
        simulator.settings.failure_rate = 1.0 if outcome == "failed" else 0.0
        simulator.settings.latency_s = 30.0 if outcome == "cancelled" else 0.05
        started = []
        for team, provider, count in batches:
            client = Client(run.gateway.http, run.keys[team])
            body = {
                "model": "flux-2-dev",
                # 512 px keeps image rendering and copying quick; prices are per image or per
                # (rounded-up) megapixel, so costs are those of a full-size job.
                "input": {"prompt": next(prompts), "width": 512, "height": 512},
                "routing": {"providers": [provider], "allow_fallbacks": False},
            }
            for _ in range(count):
                created = await client.create(body)
                assert created.status_code == 202, created.text
                started.append((team, client, created.json()["job_id"]))
        if outcome == "cancelled":
            for _, client, job_id in started:
                assert (await client.cancel(job_id)).status_code == 200
        finished = await asyncio.gather(
            *(client.wait(job_id, timeout=30) for _, client, job_id in started)
        )
        assert {job["status"] for job in finished} == {outcome}, finished
        run.jobs.extend(
            {**job, "_team": team} for (team, _, _), job in zip(started, finished, strict=True)
        )
    simulator.settings.failure_rate, simulator.settings.latency_s = 0.0, 0.05
    emulator.knobs.failure_rate = 0.0


async def _spread_over_days(run: Run) -> None:
    """Move job i back by (i mod 5) days, oldest first, so five days carry spend."""
    async with run.gateway.runtime.sessions() as session:
        for index, job in enumerate(run.jobs):
            back = timedelta(days=(len(run.jobs) - 1 - index) % 5)
            row = await session.get(Job, job["job_id"])
            assert row is not None and row.completed_at is not None
            row.created_at -= back
            row.completed_at -= back
        await session.commit()


def usd(micros: int) -> str:
    """The dashboard's way of writing an amount (kept here to state the expectation plainly)."""
    from app.dashboard.format import usd as fmt

    return fmt(micros)
