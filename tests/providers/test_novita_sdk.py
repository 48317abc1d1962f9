"""Novita's official Python SDK (`novita-client`) as an oracle for the emulator's wire format.

The SDK has no FLUX.2 method, so the submit goes through its own generic request builder
(`NovitaClient._post`: its auth header, JSON body and status check); the task-result call is the
SDK's public `async_task_result` / `wait_for_task_v3`, whose typed models parse our answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from novita_client import NovitaClient, NovitaResponseError  # type: ignore[import-untyped]
from novita_client.proto import V3TaskResponseStatus  # type: ignore[import-untyped]

from tests.emulators.novita import NovitaEmulator
from tests.emulators.support import Knobs


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[NovitaEmulator, str]]:
    emulator = NovitaEmulator()
    with emulator.serve() as base_url:
        yield emulator, base_url


@pytest.fixture
def sdk(running: tuple[NovitaEmulator, str]) -> NovitaClient:
    emulator, base_url = running
    emulator.reset(Knobs(latency=(0.02, 0.05)))
    return NovitaClient(emulator.api_key, base_url=base_url)


def test_sdk_submits_and_reads_a_finished_task(
    sdk: NovitaClient, running: tuple[NovitaEmulator, str]
) -> None:
    emulator, _ = running
    task_ids = [
        sdk._post("/v3/async/flux-2-dev", {"prompt": "a fox", "size": "640*384", "seed": seed})[
            "task_id"
        ]
        for seed in (5, 6)  # two tasks: the emulator sends image_url_ttl as a number, then a string
    ]
    for seed, task_id in zip((5, 6), task_ids, strict=True):
        result = sdk.wait_for_task_v3(task_id, wait_for=20)
        assert result.task.status is V3TaskResponseStatus.TASK_STATUS_SUCCEED
        assert result.task.task_id == task_id
        assert result.extra.seed == seed  # sent as a string, read as an int
        assert result.images[0].image_url_ttl == int(emulator.knobs.url_ttl)
        assert result.get_image_urls()[0].startswith(f"{sdk.base_url}/files/")
    assert emulator.ledger.ids() == task_ids


def test_sdk_reads_a_failed_task_and_its_reason(
    sdk: NovitaClient, running: tuple[NovitaEmulator, str]
) -> None:
    emulator, _ = running
    emulator.knobs.moderation_rate = 1.0
    task_id = sdk._post("/v3/async/flux-2-dev", {"prompt": "a fox", "size": "512*512"})["task_id"]
    result = sdk.wait_for_task_v3(task_id, wait_for=20)
    assert result.task.status is V3TaskResponseStatus.TASK_STATUS_FAILED
    assert "NSFW" in (result.task.reason or "")
    assert result.images == []


def test_sdk_sees_queued_and_processing_tasks(
    sdk: NovitaClient, running: tuple[NovitaEmulator, str]
) -> None:
    emulator, _ = running
    emulator.knobs.queue_time = (5.0, 5.0)
    task_id = sdk._post("/v3/async/flux-2-dev", {"prompt": "a fox"})["task_id"]
    assert sdk.async_task_result(task_id).task.status is V3TaskResponseStatus.TASK_STATUS_QUEUED
    emulator.tasks[task_id].queue_for = 0.0
    emulator.tasks[task_id].run_for = 5.0
    result = sdk.async_task_result(task_id)
    assert result.task.status is V3TaskResponseStatus.TASK_STATUS_PROCESSING
    assert not result.finished()


def test_sdk_refuses_a_bad_key(running: tuple[NovitaEmulator, str]) -> None:
    emulator, base_url = running
    emulator.reset(Knobs())
    with pytest.raises(NovitaResponseError, match="401"):
        NovitaClient("wrong", base_url=base_url).async_task_result("nope")
