"""Facts about the machine and the software a report was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from redis.asyncio import Redis

from bench.stack import REDIS_URL, pg_fetch

PACKAGES = (
    "imagegate",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "aiohttp",
    "sqlalchemy",
    "asyncpg",
    "redis",
    "pydantic",
    "orjson",
)
ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def load_average() -> list[float]:
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return []


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _git_commit() -> str | None:
    """The checked-out commit (read-only ``git rev-parse``)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


async def _service_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    with contextlib.suppress(Exception):
        for setting in ("server_version", "synchronous_commit", "max_connections"):
            found[f"postgresql_{setting}"] = str((await pg_fetch(f"SHOW {setting}"))[0][0])
    with contextlib.suppress(Exception):
        redis = Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            info = await redis.info("server")
            found["redis"] = str(info.get("redis_version"))
        finally:
            await redis.aclose()
    return found


async def machine_facts() -> dict[str, object]:
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_mb": _memory_mb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_start": load_average(),
        "taskset": shutil.which("taskset") is not None,
        "wrk": shutil.which("wrk") is not None,
        "git_commit": _git_commit(),
        "packages": _versions(),
        "services": await _service_versions(),
    }
