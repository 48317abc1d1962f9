"""No API key secret in the database, Redis, the logs or any error body.

A real ``imagegate serve`` process (PostgreSQL + Redis, JSON logs at debug level) issues keys
through the CLI and the admin API, rolls and revokes them, and is called with good and bad keys;
then every table is dumped (``SELECT *``), every Redis value under the run's prefix read, the
process's whole log read, and each secret (and its non-public part alone) searched for.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import inspect, text

from app.auth.keys import KeyHasher
from app.db import create_engine
from app.setup import migrate
from tests.conftest import SECRET
from tests.procs import free_port, processes, wait_ready


async def _dump_tables(url: str) -> str:
    engine = create_engine(url)
    parts = []
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
            assert "api_keys" in tables and "jobs" in tables
            for table in tables:
                rows = (await connection.execute(text(f'SELECT * FROM "{table}"'))).all()
                parts += [f"{table}: {tuple(row)!r}" for row in rows]
    finally:
        await engine.dispose()
    return "\n".join(parts)


def _dump_redis(url: str, prefix: str) -> str:
    parts = []
    with redis.Redis.from_url(url) as plain:
        for key in plain.scan_iter(match=f"{prefix}*"):
            kind = plain.type(key)
            value: Any = plain.get(key) if kind == b"string" else plain.dump(key)
            parts.append(f"{key!r}: {value!r}")
    return "\n".join(parts)


async def test_no_secret_in_database_redis_logs_or_error_bodies(
    fresh_pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, fresh_pg_url)
    prefix = f"igsecret:{uuid.uuid4().hex[:8]}:"
    env = {
        "IMAGEGATE_DATABASE_URL": fresh_pg_url,
        "IMAGEGATE_REDIS_URL": redis_url,
        "IMAGEGATE_REDIS_PREFIX": prefix,
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_LOG_LEVEL": "debug",
        "IMAGEGATE_LOG_FORMAT": "json",
        "IMAGEGATE_DB_POOL_SIZE": "4",
        "IMAGEGATE_SIMULATOR__ENABLED": "true",
        "IMAGEGATE_SIMULATOR__LATENCY_S": "0.05",
    }
    secrets: list[str] = []
    error_bodies: list[str] = []
    with processes(env, tmp_path) as group:
        port = free_port()
        group.start("serve", "--port", str(port), name="serve")
        admin_key = group.run("keys", "create", "--team", "ops", "--scope", "admin")
        secrets.append(admin_key)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:

            async def call(method: str, path: str, key: str | None, **kw: Any) -> httpx.Response:
                headers = dict(kw.pop("headers", {}))
                if key is not None:
                    headers.setdefault("Authorization", f"Bearer {key}")
                response = await http.request(method, path, headers=headers, **kw)
                if response.status_code >= 400:
                    error_bodies.append(response.text)
                return response

            team = (await call("POST", "/v1/admin/teams", admin_key, json={"name": "web"})).json()

            async def new_key(**fields: Any) -> dict[str, Any]:
                made = await call(
                    "POST", "/v1/admin/keys", admin_key, json={"team_id": team["id"], **fields}
                )
                assert made.status_code == 201, made.text
                secrets.append(made.json()["key"])
                return dict(made.json())

            full = await new_key(rate_limit_per_minute=2, rate_limit_burst=2)
            reader = await new_key(scopes=["images:read"])
            doomed = await new_key()
            await call("POST", f"/v1/admin/keys/{doomed['id']}/revoke", admin_key)
            rolled = await call(
                "POST", f"/v1/admin/keys/{full['id']}/roll", admin_key, json={"grace_period_s": 60}
            )
            secrets.append(rolled.json()["key"])
            job_body = {"model": "flux-2-dev", "input": {"prompt": "a quiet harbour"}}

            # Good uses: both secrets of the rolled key, both headers, a job to the end.
            created = await call("POST", "/v1/images", full["key"], json=job_body)
            assert created.status_code == 202, created.text
            job_id = created.json()["job_id"]
            for _ in range(200):
                got = await call(
                    "GET", f"/v1/images/{job_id}", None, headers={"X-API-Key": rolled.json()["key"]}
                )
                if got.json()["status"] == "completed":
                    break
                await asyncio.sleep(0.05)
            assert got.json()["status"] == "completed"
            assert (await call("GET", "/v1/images", reader["key"])).status_code == 200
            # Bad uses: wrong scope, revoked, rate limited, mangled, wrong scheme, unknown.
            assert (
                await call("POST", "/v1/images", reader["key"], json=job_body)
            ).status_code == 403
            assert (await call("GET", "/v1/images", doomed["key"])).status_code == 401
            assert (await call("POST", "/v1/images", full["key"], json=job_body)).status_code == 202
            assert (await call("POST", "/v1/images", full["key"], json=job_body)).status_code == 429
            for mangled in (full["key"][:-1] + "0", full["key"][:-3], full["key"] + "x"):
                assert (await call("GET", "/v1/images", mangled)).status_code == 401
            basic = {"Authorization": f"Basic {rolled.json()['key']}"}
            assert (await call("GET", "/v1/images", None, headers=basic)).status_code == 401
            assert (await call("GET", "/v1/admin/keys", reader["key"])).status_code == 403
            listed = await call("GET", "/v1/admin/keys", admin_key, params={"include_revoked": 1})
            assert listed.status_code == 200
            for secret in secrets:
                assert secret not in listed.text
    log = (tmp_path / "serve.log").read_text(errors="replace")
    database = await _dump_tables(fresh_pg_url)
    cached = _dump_redis(redis_url, prefix)

    # The dumps are real: keys are there as HMACs, the job is cached, requests were logged.
    hasher = KeyHasher(SECRET.encode())
    assert hasher(rolled.json()["key"]) in database and hasher(full["key"]) in database
    assert job_id in cached
    assert '"path": "/v1/images"' in log or '"path":"/v1/images"' in log
    assert len(error_bodies) >= 8

    places = {"database": database, "redis": cached, "logs": log, "errors": "\n".join(error_bodies)}
    for secret in secrets:
        hidden = secret[11:]  # everything after the public display prefix
        for where, content in places.items():
            assert secret not in content, f"a key's secret is in the {where}"
            assert hidden not in content, f"a key's secret part is in the {where}"
            assert secret[3:-6] not in content, f"a key's random part is in the {where}"
