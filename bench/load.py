"""The load generator: N concurrent aiohttp clients in one process, for a fixed time.

Requests run back to back on keep-alive connections (closed loop). A warm-up opens the
connections and fills caches; the measured window then counts every response that completes
inside it, with its latency. The generator's own CPU use is recorded too: near 100 % of its core
means the figures are bounded by the client, not the server.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

CpuProbe = Callable[[], Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Workload:
    """What every request of a run looks like; ``paths`` are picked at random per request."""

    method: str
    paths: Sequence[str]
    expect: int
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class LoadResult:
    """One measured window against one server."""

    duration_s: float
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    generator_cpu_pct: float = 0.0
    server_cpu_pct: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.ok

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the successful requests' latencies, in ms."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank]

    def cpu_ms_per_request(self, server: str) -> float:
        """CPU time ``server`` spent per successful request (robust to a busy machine)."""
        share = self.server_cpu_pct.get(server)
        if share is None or not self.ok:
            return float("nan")
        return share / 100 * self.duration_s * 1000 / self.ok

    def summary(self) -> dict[str, object]:
        return {
            "requests_per_s": round(self.rps, 1),
            "ok": self.ok,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "p50_ms": round(self.percentile(50), 3),
            "p90_ms": round(self.percentile(90), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(max(self.latencies_ms, default=float("nan")), 3),
            "duration_s": round(self.duration_s, 3),
            "generator_cpu_pct": round(self.generator_cpu_pct, 1),
            "server_cpu_pct": {k: round(v, 1) for k, v in self.server_cpu_pct.items()},
            "server_cpu_ms_per_request": {
                k: round(self.cpu_ms_per_request(k), 3) for k in self.server_cpu_pct
            },
        }


@dataclass(slots=True)
class _Window:
    start: float
    end: float


def _urls(base_url: str, paths: Sequence[str]) -> list[URL]:
    return [URL(base_url.rstrip("/") + path, encoded=True) for path in paths]


async def _client(
    session: aiohttp.ClientSession,
    workload: Workload,
    urls: list[URL],
    window: _Window,
    result: LoadResult,
) -> None:
    headers = dict(workload.headers)
    pick = random.choice
    while True:
        started = time.perf_counter()
        if started >= window.end:
            return
        try:
            async with session.request(
                workload.method, pick(urls), data=workload.body, headers=headers
            ) as response:
                await response.read()
                status = str(response.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            status = type(exc).__name__
        done = time.perf_counter()
        if window.start <= done <= window.end:
            result.statuses[status] += 1
            if status == str(workload.expect):
                result.ok += 1
                result.latencies_ms.append((done - started) * 1000)


async def _watch_cpu(window: _Window, probe: CpuProbe | None, result: LoadResult) -> None:
    """Sample the generator's and the servers' CPU time at the window's edges."""
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    own, servers = time.process_time(), dict(probe() if probe else {})
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    span = window.end - window.start
    result.generator_cpu_pct = (time.process_time() - own) / span * 100
    if probe is not None:
        after = probe()
        result.server_cpu_pct = {
            name: (after.get(name, 0.0) - before) / span * 100 for name, before in servers.items()
        }


async def run_load(
    base_url: str,
    workload: Workload,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    cpu_probe: CpuProbe | None = None,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Drive ``concurrency`` clients for ``warmup_s`` + ``duration_s``; measure the latter."""
    urls = _urls(base_url, workload.paths)
    now = time.perf_counter()
    window = _Window(now + warmup_s, now + warmup_s + duration_s)
    result = LoadResult(duration_s=duration_s)
    connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        watcher = asyncio.create_task(_watch_cpu(window, cpu_probe, result))
        clients = [_client(session, workload, urls, window, result) for _ in range(concurrency)]
        await asyncio.gather(*clients)
        await watcher
    return result
