"""Acceptance (issue 5, line 4): usage figures match a scripted set of jobs exactly, JSON and CSV.

The jobs are written straight into the job store with chosen times, providers, statuses, costs
and outputs (in February 2024, a range no other test writes to), so every expected figure below
is worked out by hand, not recomputed by the code under test. Completion times: 2.5 s, 4.0 s and
1.0 s for team alpha, so p50 = 2.5 and p95 = 2.5 + (4.0 - 2.5) * 0.9 = 3.85.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.auth.service import issue_key
from app.kit.ids import new_job_id
from app.models import Job, Output
from app.runtime import Runtime
from tests.conftest import Gateway

RANGE = {"from": "2024-02-28", "to": "2024-03-01"}
DEV, PRO = "black-forest-labs/flux-2-dev", "black-forest-labs/flux-2-pro"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class Scripted:
    alpha: str  # key of team alpha ("alpha-web"), usage:read
    alpha_batch: str  # second key of team alpha ("alpha-batch")
    beta: str
    admin: str
    ids: dict[str, str]  # names -> team and key ids


async def _job(
    runtime: Runtime,
    team_id: str,
    key_id: str,
    created: str,
    status: str,
    *,
    provider: str | None,
    model: str = DEV,
    estimate: int | None,
    actual: int | None = None,
    took_s: float | None = None,
    images: tuple[tuple[int, int], ...] = (),
) -> None:
    created_at = at(created)
    stage = {"pending": "queued", "processing": "running"}.get(status, "done")
    job = Job(
        id=new_job_id(),
        team_id=team_id,
        api_key_id=key_id,
        model=model,
        input={"prompt": "scripted"},
        request_hash="0" * 64,
        status=status,
        stage=stage,
        provider=provider,
        route_plan=[],
        estimated_cost_micros=estimate,
        actual_cost_micros=actual,
        created_at=created_at,
        updated_at=created_at,
        completed_at=created_at + timedelta(seconds=took_s) if took_s is not None else None,
        attempt_count=1,
        poll_errors=0,
        cancel_requested=False,
        lease_epoch=0,
    )
    async with runtime.sessions() as session:
        session.add(job)
        await session.flush()
        for index, (width, height) in enumerate(images):
            session.add(
                Output(
                    job_id=job.id,
                    index=index,
                    storage_key=f"{job.id}/{index}.webp",
                    content_type="image/webp",
                    width=width,
                    height=height,
                    bytes=1000,
                    sha256="0" * 64,
                )
            )
        await session.commit()


@pytest.fixture(scope="module")
async def scripted(gateway: Gateway) -> Scripted:
    runtime = gateway.runtime
    suffix = new_job_id()[-6:]
    keys: dict[str, Any] = {}
    async with runtime.sessions() as session:
        for team, name, scopes in (
            ("alpha", "alpha-web", ["images:read", "usage:read"]),
            ("alpha", "alpha-batch", ["images:write"]),
            ("beta", "beta-web", ["usage:read"]),
            ("ops", "ops-admin", ["admin"]),
        ):
            keys[name] = await issue_key(
                session, runtime.hasher, team_name=f"{team}-{suffix}", name=name, scopes=scopes
            )
            await session.flush()
        await session.commit()
    a, b = keys["alpha-web"], keys["alpha-batch"]
    team_a, team_b = a.team_id, keys["beta-web"].team_id
    web, batch = a.key_id, b.key_id
    run = runtime
    # Team alpha, 2024-02-28
    await _job(
        run,
        team_a,
        web,
        "2024-02-28T10:00:00",
        "completed",
        provider="simulator",
        estimate=10_000,
        actual=9_000,
        took_s=2.5,
        images=((1024, 1024), (1024, 1024)),
    )
    await _job(
        run,
        team_a,
        web,
        "2024-02-28T11:00:00",
        "completed",
        provider="fal",
        model=PRO,
        estimate=20_000,
        actual=20_000,
        took_s=4.0,
        images=((1536, 1024),),
    )
    await _job(
        run, team_a, web, "2024-02-28T12:00:00", "processing", provider="fal", estimate=20_000
    )
    # Team alpha, 2024-02-29 (the last one a millisecond before midnight UTC)
    await _job(run, team_a, batch, "2024-02-29T09:00:00", "failed", provider="fal", estimate=20_000)
    await _job(
        run, team_a, batch, "2024-02-29T09:30:00", "cancelled", provider=None, estimate=10_000
    )
    await _job(
        run,
        team_a,
        batch,
        "2024-02-29T12:00:00",
        "completed",
        provider="simulator",
        estimate=5_000,
        actual=5_000,
        took_s=1.0,
        images=((512, 512),),
    )
    await _job(run, team_a, web, "2024-02-29T23:59:59.999", "pending", provider=None, estimate=None)
    # Outside the range on either side.
    await _job(
        run,
        team_a,
        web,
        "2024-02-27T23:59:59.999",
        "completed",
        provider="simulator",
        estimate=1,
        actual=1,
        took_s=9.0,
        images=((256, 256),),
    )
    await _job(
        run,
        team_a,
        web,
        "2024-03-01T00:00:00",
        "completed",
        provider="simulator",
        estimate=1,
        actual=1,
        took_s=9.0,
        images=((256, 256),),
    )
    # Team beta
    await _job(
        run,
        team_b,
        keys["beta-web"].key_id,
        "2024-02-29T08:00:00",
        "completed",
        provider="simulator",
        estimate=3_000,
        actual=3_000,
        took_s=3.25,
        images=((1024, 1024),),
    )
    ids = {"alpha": team_a, "beta": team_b, "alpha-web": web, "alpha-batch": batch,
           "alpha-name": f"alpha-{suffix}", "beta-name": f"beta-{suffix}"}  # fmt: skip
    return Scripted(a.key, b.key, keys["beta-web"].key, keys["ops-admin"].key, ids)


def figures(
    jobs: dict[str, int],
    images: int,
    megapixels: float,
    estimated: str,
    actual: str,
    unpriced: int = 0,
    p50: float | None = None,
    p95: float | None = None,
) -> dict[str, Any]:
    counts = {s: jobs.get(s, 0) for s in ("pending", "processing", "completed", "failed")}
    counts["cancelled"] = jobs.get("cancelled", 0)
    return {
        "jobs": {"total": sum(jobs.values()), **counts},
        "images": images,
        "megapixels": megapixels,
        "estimated_usd": estimated,
        "actual_usd": actual,
        "unpriced_jobs": unpriced,
        "time_to_completion_s": {"p50": p50, "p95": p95},
    }


ALPHA_BY_DAY_AND_PROVIDER = [
    ({"day": "2024-02-28", "provider": "fal"},
     figures({"completed": 1, "processing": 1}, 1, 1.572864, "0.040000", "0.020000",
             p50=4.0, p95=4.0)),
    ({"day": "2024-02-28", "provider": "simulator"},
     figures({"completed": 1}, 2, 2.097152, "0.010000", "0.009000", p50=2.5, p95=2.5)),
    ({"day": "2024-02-29", "provider": "fal"},
     figures({"failed": 1}, 0, 0.0, "0.020000", "0.000000")),
    ({"day": "2024-02-29", "provider": "simulator"},
     figures({"completed": 1}, 1, 0.262144, "0.005000", "0.005000", p50=1.0, p95=1.0)),
    ({"day": "2024-02-29", "provider": None},
     figures({"cancelled": 1, "pending": 1}, 0, 0.0, "0.010000", "0.000000", unpriced=1)),
]  # fmt: skip
ALPHA_TOTALS = figures(
    {"completed": 3, "processing": 1, "failed": 1, "cancelled": 1, "pending": 1},
    4, 3.93216, "0.085000", "0.034000", unpriced=1, p50=2.5, p95=3.85,
)  # fmt: skip
BETA_TOTALS = figures({"completed": 1}, 1, 1.048576, "0.003000", "0.003000", p50=3.25, p95=3.25)


async def _usage(gateway: Gateway, key: str, **params: str) -> Any:
    response = await gateway.http.get(
        "/v1/usage", params={**RANGE, **params}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response


async def test_json_figures_match_the_scripted_jobs_exactly(
    gateway: Gateway, scripted: Scripted
) -> None:
    report = (await _usage(gateway, scripted.alpha, group_by="day,provider")).json()
    assert report["from"] == "2024-02-28T00:00:00.000Z"
    assert report["to"] == "2024-03-01T00:00:00.000Z"
    assert report["group_by"] == ["day", "provider"]
    assert report["currency"] == "USD"
    assert [
        (g["group"], {k: v for k, v in g.items() if k != "group"}) for g in report["groups"]
    ] == (ALPHA_BY_DAY_AND_PROVIDER)
    assert report["totals"] == ALPHA_TOTALS


async def test_groupings_by_model_key_and_team(gateway: Gateway, scripted: Scripted) -> None:
    by_model = (await _usage(gateway, scripted.alpha, group_by="model")).json()["groups"]
    assert [(g["group"]["model"], g["jobs"]["total"], g["actual_usd"]) for g in by_model] == [
        (DEV, 6, "0.014000"),
        (PRO, 1, "0.020000"),
    ]
    by_key = (await _usage(gateway, scripted.alpha, group_by="key")).json()["groups"]
    keyed = {g["group"]["key_name"]: g for g in by_key}
    assert set(keyed) == {"alpha-web", "alpha-batch"}
    assert keyed["alpha-batch"]["group"]["key_id"] == scripted.ids["alpha-batch"]
    assert keyed["alpha-batch"]["jobs"] == {
        "total": 3, "pending": 0, "processing": 0, "completed": 1, "failed": 1, "cancelled": 1,
    }  # fmt: skip
    assert keyed["alpha-web"]["estimated_usd"] == "0.050000"
    assert keyed["alpha-web"]["time_to_completion_s"] == {"p50": 3.25, "p95": 3.925}


async def test_a_team_key_sees_its_team_and_admin_sees_every_team(
    gateway: Gateway, scripted: Scripted
) -> None:
    beta = (await _usage(gateway, scripted.beta, group_by="team")).json()
    assert [g["group"]["team_id"] for g in beta["groups"]] == [scripted.ids["beta"]]
    assert beta["totals"] == BETA_TOTALS

    every = (await _usage(gateway, scripted.admin, group_by="team")).json()
    teams = {g["group"]["team_name"]: g for g in every["groups"]}
    assert set(teams) == {scripted.ids["alpha-name"], scripted.ids["beta-name"]}
    assert {k: v for k, v in teams[scripted.ids["beta-name"]].items() if k != "group"} == (
        BETA_TOTALS
    )
    assert every["totals"]["jobs"]["total"] == 8
    assert every["totals"]["actual_usd"] == "0.037000"
    # Four completions: 1.0, 2.5, 3.25, 4.0 s; p95 = 3.25 + 0.75 * 0.85 = 3.8875 in decimal,
    # 3.88749999... in binary floating point (PostgreSQL's too), so 3.887 to the millisecond.
    assert every["totals"]["time_to_completion_s"] == {"p50": 2.875, "p95": 3.887}


async def test_csv_has_a_header_and_the_same_figures(gateway: Gateway, scripted: Scripted) -> None:
    response = await _usage(gateway, scripted.alpha, group_by="day,provider", format="csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="imagegate-usage-20240228T000000Z-20240301T000000Z.csv"'
    )
    assert response.text.startswith(
        "day,provider,jobs_total,jobs_pending,jobs_processing,jobs_completed,jobs_failed,"
        "jobs_cancelled,images,megapixels,estimated_usd,actual_usd,unpriced_jobs,p50_s,p95_s\r\n"
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows == [_csv_row(group, values) for group, values in ALPHA_BY_DAY_AND_PROVIDER]


def _csv_row(group: dict[str, str | None], values: dict[str, Any]) -> dict[str, str]:
    jobs, times = values["jobs"], values["time_to_completion_s"]
    row = {name: value or "" for name, value in group.items()}
    row.update({f"jobs_{name}": str(count) for name, count in jobs.items()})
    row.update(
        images=str(values["images"]),
        megapixels=f"{values['megapixels']:.6f}",
        estimated_usd=values["estimated_usd"],
        actual_usd=values["actual_usd"],
        unpriced_jobs=str(values["unpriced_jobs"]),
        p50_s="" if times["p50"] is None else f"{times['p50']:.3f}",
        p95_s="" if times["p95"] is None else f"{times['p95']:.3f}",
    )
    return row


async def test_an_empty_range_reports_zeros(gateway: Gateway, scripted: Scripted) -> None:
    response = await gateway.http.get(
        "/v1/usage",
        params={"from": "2001-01-01", "to": "2001-02-01", "group_by": "day"},
        headers={"Authorization": f"Bearer {scripted.admin}"},
    )
    report = response.json()
    assert report["groups"] == []
    assert report["totals"] == figures({}, 0, 0.0, "0.000000", "0.000000")
