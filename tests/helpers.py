"""Small test helpers: issuing keys, a typed client for ``/v1/images``, waiting for jobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from app.auth.keys import DEFAULT_SCOPES
from app.auth.service import issue_key
from app.runtime import Runtime

TERMINAL = ("completed", "failed", "cancelled")
SEED_EXAMPLE = {
    "model": "black-forest-labs/flux-2-dev",
    "input": {
        "aspect_ratio": "match_input_image",
        "input_images": [
            "https://replicate.delivery/pbxt/O7kbtH7wgLIItlCyeWjm0fgPpx7OpGsT9VbYyxBXnfieVxQe/woman-by-car.jpg"
        ],
        "output_format": "jpg",
        "prompt": "Replace the color of the car to blue",
        "go_fast": True,
        "output_quality": 80,
    },
}


async def new_key(
    runtime: Runtime, team: str | None = None, scopes: Sequence[str] = DEFAULT_SCOPES
) -> str:
    async with runtime.sessions() as session:
        issued = await issue_key(
            session, runtime.hasher, team_name=team or f"team-{uuid.uuid4().hex[:8]}", scopes=scopes
        )
        await session.commit()
    return issued.key


def body(prompt: str = "a red fox in fresh snow", **input_fields: Any) -> dict[str, Any]:
    return {"model": "flux-2-dev", "input": {"prompt": prompt, **input_fields}}


@dataclass
class Client:
    http: httpx.AsyncClient
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def create(self, payload: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.http.post("/v1/images", json=payload, headers={**self.headers, **headers})

    async def get(self, job_id: str) -> httpx.Response:
        return await self.http.get(f"/v1/images/{job_id}", headers=self.headers)

    async def cancel(self, job_id: str) -> httpx.Response:
        return await self.http.delete(f"/v1/images/{job_id}", headers=self.headers)

    async def wait(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = await self.get(job_id)
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not terminal after {timeout}s: {job}")
            await asyncio.sleep(0.05)
