"""``/healthz`` (the process answers) and ``/readyz`` (its database and cache answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy import text

from app.web.deps import RuntimeDep
from app.web.responses import Json

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Json:
    """Ready when the job store answers (and Redis, when configured)."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2.0), runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if runtime.redis is not None:
        checks["redis"] = "ok" if await runtime.cache.ping() else "unavailable"
    ready = checks["database"] == "ok"  # Redis down degrades, it does not unready
    return Json({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
