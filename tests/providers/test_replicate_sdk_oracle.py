"""Oracle: the official ``replicate`` SDK (1.x) runs predictions against the emulator.

If the SDK parses every answer, the emulator speaks Replicate's wire format, so the adapter's
tests against it mean something. The emulator is served over TLS (a throwaway self-signed
certificate) because the SDK only turns ``https:`` outputs into ``FileOutput`` objects; the only
non-default SDK settings are the base URL and the transport trusting that certificate.
"""

from __future__ import annotations

import io
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from tests.emulators.replicate import VERSION, ReplicateEmulator
from tests.emulators.support import Knobs

MODEL = "black-forest-labs/flux-2-dev"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_emulator(
    certificate: tuple[Path, Path],
) -> Iterator[tuple[ReplicateEmulator, str, ssl.SSLContext]]:
    cert, key = certificate
    emulator = ReplicateEmulator()
    with emulator.serve(ssl_certfile=str(cert), ssl_keyfile=str(key)) as base_url:
        yield emulator, base_url, ssl.create_default_context(cafile=str(cert))


@pytest.fixture
def emulator(tls_emulator: tuple[ReplicateEmulator, str, ssl.SSLContext]) -> ReplicateEmulator:
    tls_emulator[0].reset(Knobs(latency=(0.05, 0.1), seed=11))
    return tls_emulator[0]


@pytest.fixture
def served(
    tls_emulator: tuple[ReplicateEmulator, str, ssl.SSLContext],
) -> tuple[str, ssl.SSLContext]:
    return tls_emulator[1], tls_emulator[2]


def sdk_client(served: tuple[str, ssl.SSLContext], token: str) -> Client:
    base_url, trust = served
    return Client(api_token=token, base_url=base_url, transport=httpx.HTTPTransport(verify=trust))


@pytest.fixture
def client(emulator: ReplicateEmulator, served: tuple[str, ssl.SSLContext]) -> Iterator[Client]:
    sdk = sdk_client(served, emulator.api_key)
    yield sdk
    sdk._client.close()


def image_of(output: FileOutput) -> Image.Image:
    return Image.open(io.BytesIO(output.read()))


def test_run_blocks_with_prefer_wait_and_returns_a_file_output(
    client: Client, emulator: ReplicateEmulator
) -> None:
    output = client.run(
        MODEL,
        input={"prompt": "a red fox", "aspect_ratio": "custom", "width": 512, "height": 384,
               "output_format": "png"},
    )  # fmt: skip

    assert isinstance(output, FileOutput)
    image = image_of(output)
    assert (image.size, image.format) == ((512, 384), "PNG")
    assert len(emulator.ledger) == 1
    assert emulator.calls.count("GET", "/v1/predictions/") == 0  # the blocking answer sufficed


def test_run_falls_back_to_polling_when_the_wait_runs_out(
    client: Client, emulator: ReplicateEmulator
) -> None:
    emulator.knobs.latency = (1.3, 1.3)

    output = client.run(MODEL, input={"prompt": "a slow fox", "output_format": "jpg"}, wait=1)

    assert isinstance(output, FileOutput)
    assert image_of(output).format == "JPEG"
    assert emulator.calls.count("GET", "/v1/predictions/") >= 1


def test_create_then_wait_on_the_version_route(client: Client, emulator: ReplicateEmulator) -> None:
    prediction = client.predictions.create(version=VERSION, input={"prompt": "a fox", "seed": 5})
    first_status = prediction.status

    prediction.wait()

    assert first_status == "starting"
    assert prediction.status == "succeeded"
    assert isinstance(prediction.output, str)
    assert prediction.metrics is not None
    assert prediction.metrics["predict_time"] > 0
    assert "Using seed: 5" in (prediction.logs or "")
    assert emulator.ledger.entries[0].body["version"] == VERSION


def test_failed_prediction_raises_model_error(client: Client, emulator: ReplicateEmulator) -> None:
    emulator.knobs.moderation_rate = 1.0

    with pytest.raises(ModelError, match="NSFW"):
        client.run(MODEL, input={"prompt": "a fox"})


def test_api_errors_parse_as_problem_details(client: Client, emulator: ReplicateEmulator) -> None:
    with pytest.raises(ReplicateError) as invalid:
        client.models.predictions.create(model=MODEL, input={"prompt": "x", "width": 4096})
    emulator.knobs.burst_429 = 1
    emulator.knobs.retry_after = 0
    with pytest.raises(ReplicateError) as throttled:  # POST is not retried by the SDK
        client.models.predictions.create(model=MODEL, input={"prompt": "x"})

    assert invalid.value.status == 422
    assert invalid.value.title == "Input validation failed"
    assert "input.width" in (invalid.value.detail or "")
    assert throttled.value.status == 429
    assert "throttled" in (throttled.value.detail or "")
    assert len(emulator.ledger) == 0


def test_cancel_list_and_webhook_secret(client: Client, emulator: ReplicateEmulator) -> None:
    emulator.knobs.latency = (5.0, 5.0)
    first = client.models.predictions.create(model=MODEL, input={"prompt": "one"})
    time.sleep(0.01)
    second = client.models.predictions.create(model=MODEL, input={"prompt": "two"})

    canceled = client.predictions.cancel(first.id)
    page = client.predictions.list()
    secret = client.webhooks.default.secret()

    assert canceled.status == "canceled"
    assert [p.id for p in page.results] == [second.id, first.id]  # newest first
    assert page.next is None
    assert secret.key == emulator.webhook_secret


def test_wrong_token_is_unauthenticated(served: tuple[str, ssl.SSLContext]) -> None:
    other = sdk_client(served, "r8_wrong")

    with pytest.raises(ReplicateError) as denied:
        other.predictions.get("anything")
    other._client.close()

    assert denied.value.status == 401
    assert denied.value.title == "Unauthenticated"
