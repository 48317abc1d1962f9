"""The reference for B1/B2: a minimal FastAPI app doing the same HTTP work with no gateway logic.

``POST /v1/images`` reads the body and answers a small JSON 202; ``GET /v1/images/{job_id}``
answers a fixed ~1.5 KB job-shaped JSON. Run it as ``python -m bench.reference_app --port N``;
uvicorn gets the gateway's options (uvloop, httptools, no access log, warning level).
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

_ACCEPTED = orjson.dumps(
    {
        "job_id": "img_01JBENCHREFERENCE0000000000",
        "status": "pending",
        "urls": {"get": "/v1/images/img_01JBENCHREFERENCE0000000000"},
    }
)


def _document(padding: str) -> dict[str, object]:
    """A completed job as the gateway renders it; ``padding`` lengthens the signed URL."""
    job_id = "img_01JBENCHREFERENCE0000000000"
    path = f"/v1/images/{job_id}"
    return {
        "job_id": job_id,
        "status": "completed",
        "model": "black-forest-labs/flux-2-dev",
        "provider": "simulator",
        "input": {"prompt": "bench", "aspect_ratio": "1:1", "width": 1024, "height": 1024},
        "result": {
            "images": [
                {
                    "url": "http://127.0.0.1/v1/files/"
                    + "a" * 64
                    + "?exp=1700000000&sig="
                    + padding,
                    "content_type": "image/png",
                    "width": 1024,
                    "height": 1024,
                    "bytes": 12345,
                }
            ]
        },
        "error": None,
        "cost": {"estimated_usd": "0.003000", "actual_usd": "0.003000", "currency": "USD"},
        "attempts": [
            {
                "provider": "simulator",
                "upstream_id": "sim_01JBENCHREFERENCE000000000",
                "status": "succeeded",
                "submitted_at": "2025-01-01T00:00:00.000Z",
                "finished_at": "2025-01-01T00:00:02.000Z",
                "error": None,
            }
        ],
        "metadata": None,
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": "2025-01-01T00:00:02.000Z",
        "started_at": "2025-01-01T00:00:00.100Z",
        "completed_at": "2025-01-01T00:00:02.100Z",
        "urls": {"get": path, "cancel": path, "events": f"{path}/events"},
    }


def _job_document(size: int = 1536) -> bytes:
    """The document padded to ``size`` bytes of JSON (the gateway's is about 1.5 KB)."""
    unpadded = len(orjson.dumps(_document("")))
    return orjson.dumps(_document("s" * max(0, size - unpadded)))


JOB_DOCUMENT = _job_document()


def create_app() -> FastAPI:
    app = FastAPI(title="imagegate-bench-reference")

    @app.post("/v1/images", status_code=202)
    async def create(request: Request) -> Response:
        await request.body()
        return Response(_ACCEPTED, 202, media_type="application/json")

    @app.get("/v1/images/{job_id}")
    async def get(job_id: str) -> Response:
        return Response(JOB_DOCUMENT, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
