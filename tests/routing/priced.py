"""Three priced upstreams (fal emulators under their own names) behind one gateway.

A catalog override gives them distinct prices for FLUX.2 [dev]: ``cheap`` $0.010 per megapixel,
``next`` a fixed $0.015 per request, ``dear`` $0.020 per megapixel. Provider names carry a
random suffix so that statistics and breakers from other tests never mix in.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Backend, Gateway, start_gateway
from tests.emulators.fal import FalEmulator
from tests.emulators.support import Knobs
from tests.helpers import Client
from tests.providers.upstreams import UPSTREAMS

MODEL = "black-forest-labs/flux-2-dev"
PRICES: dict[str, dict[str, Any]] = {
    "cheap": {"kind": "per_megapixel", "usd_per_mp": "0.010"},
    "next": {"kind": "fixed", "usd": "0.015"},
    "dear": {"kind": "per_megapixel", "usd_per_mp": "0.020"},
}
FAST = Knobs(latency=(0.0, 0.02))
# Small breaker thresholds; the cool-down is driven by the test's clock, never by waiting.
ROUTING = {
    "breaker_consecutive_failures": 3,
    "breaker_cooldown_s": 30.0,
    "breaker_view_ttl_s": 0.0,
    "stats_ttl_s": 1.0,
}


def small_job(prompt: str, **input_fields: Any) -> dict[str, Any]:
    """A small job (512x512 jpg: cheap to render and check), priced as 1 MP everywhere."""
    fields = {"aspect_ratio": "custom", "width": 512, "height": 512, "output_format": "jpg"}
    return {"model": "flux-2-dev", "input": {"prompt": prompt, **fields, **input_fields}}


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Priced:
    gateway: Gateway
    names: dict[str, str]  # role -> provider name
    emulators: dict[str, FalEmulator]  # by role
    clock: Clock

    def role(self, provider: str | None) -> str | None:
        return next((r for r, n in self.names.items() if n == provider), None)

    def submits(self, role: str) -> int:
        """Every submit that reached the upstream, accepted (billed) or refused."""
        return self.emulators[role].calls.count("POST")


def write_catalog(path: Path, names: dict[str, str], prices: dict[str, Any]) -> Path:
    providers = {
        names[role]: {"model": "fal-ai/flux-2", "price": price} for role, price in prices.items()
    }
    path.write_text(yaml.safe_dump({"models": {MODEL: {"providers": providers}}}))
    return path


async def priced_gateway(
    backend: Backend,
    tmp: Path,
    *,
    knobs: dict[str, Knobs] | None = None,
    prices: dict[str, dict[str, Any]] | None = None,
    provider_settings: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> AsyncIterator[Priced]:
    suffix = uuid.uuid4().hex[:6]
    names = {role: f"{role}{suffix}" for role in PRICES}
    emulators = {role: FalEmulator() for role in PRICES}
    clock = Clock()
    fal = UPSTREAMS["fal"]
    with ExitStack() as stack:
        providers = {}
        for role, emulator in emulators.items():
            emulator.reset((knobs or {}).get(role) or Knobs(**FAST.__dict__))
            url = stack.enter_context(emulator.serve())
            # Generous timeouts: a busy test machine must not turn a slow answer into an
            # unknown outcome (tests that want one set their own).
            extra = {
                "kind": "fal",
                "total_timeout_s": 30,
                "read_timeout_s": 30,
                **(provider_settings or {}).get(role, {}),
            }
            providers[names[role]] = fal.settings(emulator, url, **extra)
        overrides.setdefault("routing", ROUTING)
        async for gateway in start_gateway(
            backend,
            tmp,
            providers=providers,
            simulator={"enabled": False},
            catalog_path=write_catalog(tmp / "catalog.yaml", names, prices or PRICES),
            **overrides,
        ):
            breakers: Any = gateway.runtime.health.breakers
            breakers.clock = clock
            if hasattr(breakers, "fallback"):
                breakers.fallback.clock = clock
            yield Priced(gateway, names, emulators, clock)


async def run_jobs(
    client: Client, payloads: list[dict[str, Any]], concurrency: int = 32
) -> list[dict[str, Any]]:
    """Create every job (at most ``concurrency`` at a time) and wait for each to finish."""
    gate = asyncio.Semaphore(concurrency)

    async def one(payload: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            # The gateway holds the answer until the job ends: no polling load on the worker.
            created = await client.create(payload, Prefer="wait=60")
            assert created.status_code in (200, 202), created.text
            job: dict[str, Any] = created.json()
            if created.status_code == 200:
                return job
            return await client.wait(job["job_id"], timeout=60)

    return list(await asyncio.gather(*(one(p) for p in payloads)))
