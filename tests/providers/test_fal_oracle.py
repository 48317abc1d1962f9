"""The official ``fal-client`` SDK against the fal emulator: the oracle for its wire format.

fal-client hard-codes https and reads its queue host once, at import: ``FAL_QUEUE_RUN_HOST`` in
``fal_client/auth.py`` feeds ``QUEUE_URL_FORMAT = f"https://{FAL_QUEUE_RUN_HOST}/"`` in
``fal_client/client.py``. So the emulator is served over TLS with a throwaway self-signed
certificate for 127.0.0.1 (made with the ``openssl`` CLI), the SDK trusts it through
``SSL_CERT_FILE`` (httpx honours it), and the SDK runs in a subprocess whose environment carries
the host: the constant cannot be re-pointed inside this process without reloading the SDK.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulators.fal import FalEmulator
from tests.emulators.support import Knobs

SDK_SCRIPT = r"""
import json, sys
import fal_client
from fal_client.client import FalClientHTTPError

client = fal_client.SyncClient()
out = {}


def name(status):
    return type(status).__name__


if sys.argv[1] == "happy":
    updates = []
    out["t2i"] = client.subscribe(
        "fal-ai/flux-2",
        arguments={
            "prompt": "a lighthouse",
            "image_size": {"width": 640, "height": 512},
            "output_format": "jpeg",
            "num_images": 2,
            "seed": 9,
        },
        with_logs=True,
        interval=0.02,
        on_queue_update=lambda status: updates.append(name(status)),
    )
    out["t2i_updates"] = updates

    edit = client.submit(
        "fal-ai/flux-2/edit",
        {"prompt": "make it winter", "image_urls": ["https://files.example.test/a.png"]},
    )
    out["edit"] = {
        "request_id": edit.request_id,
        "status_url": edit.status_url,
        # by id: the SDK builds the URL itself, from owner/alias only
        "status": name(client.status("fal-ai/flux-2/edit", edit.request_id)),
        "result": client.result("fal-ai/flux-2/edit", edit.request_id),
    }

    lora = client.submit(
        "fal-ai/flux-2/lora",
        {"prompt": "in the style", "loras": [{"path": "owner/repo", "scale": 0.5}]},
    )
    lora.cancel()
    cancelled = lora.status()
    out["cancel"] = {
        "request_id": lora.request_id,
        "status": name(cancelled),
        "error": cancelled.error,
        "error_type": cancelled.error_type,
    }

    try:
        client.submit("fal-ai/flux-2", {"prompt": "", "image_size": {"width": 64, "height": 64}})
    except FalClientHTTPError as exc:
        out["invalid"] = {"status_code": exc.status_code, "detail": exc.message}

if sys.argv[1] == "broken":
    handle = client.submit("fal-ai/flux-2", {"prompt": "a lighthouse"})
    try:
        handle.status()
    except ValueError as exc:
        out["unknown_status"] = str(exc)
    try:
        handle.get(interval=0.02)
    except FalClientHTTPError as exc:
        out["failed"] = {"status_code": exc.status_code, "error_type": exc.error_type}
    final = handle.status()
    out["failed_status"] = {"status": name(final), "error_type": final.error_type}

print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI makes the emulator's throwaway TLS certificate"
    folder = tmp_path_factory.mktemp("fal-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [
        *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1"),
        *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
    ]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_emulator(certificate: tuple[Path, Path]) -> Iterator[tuple[FalEmulator, str]]:
    emulator = FalEmulator()
    cert, key = certificate
    with emulator.serve(ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        assert url.startswith("https://127.0.0.1:")
        yield emulator, url


def run_sdk(scenario: str, base_url: str, emulator: FalEmulator, cert: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env |= {
        "FAL_QUEUE_RUN_HOST": base_url.removeprefix("https://"),
        "FAL_RUN_HOST": base_url.removeprefix("https://"),
        "FAL_KEY": emulator.api_key,
        "SSL_CERT_FILE": str(cert),
        "HOME": str(cert.parent),  # no ~/.fal credentials from the machine
    }
    done = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT, scenario],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_fal_client_submits_polls_and_reads_results(
    tls_emulator: tuple[FalEmulator, str], certificate: tuple[Path, Path]
) -> None:
    emulator, base_url = tls_emulator
    emulator.reset(Knobs(seed=3))

    out = run_sdk("happy", base_url, emulator, certificate[0])

    t2i = out["t2i"]
    assert t2i["seed"] == 9
    assert t2i["has_nsfw_concepts"] == [False, False]
    assert [(i["width"], i["height"], i["content_type"]) for i in t2i["images"]] == [
        (640, 512, "image/jpeg")
    ] * 2
    assert out["t2i_updates"][-1] == "Completed"
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    with httpx.Client(verify=trusted) as http:
        image = http.get(t2i["images"][0]["url"])
    assert image.status_code == 200
    assert image.content[:3] == b"\xff\xd8\xff"  # JPEG
    assert len(image.content) == t2i["images"][0]["file_size"]

    # The edit request's URLs, and the SDK's own by-id URLs, drop the /edit sub-path.
    edit = out["edit"]
    app_path = f"/fal-ai/flux-2/requests/{edit['request_id']}"
    assert edit["status_url"] == f"{base_url}{app_path}/status"
    assert edit["status"] in ("Queued", "InProgress", "Completed")
    assert edit["result"]["images"][0]["width"] == 1024  # fal's default landscape_4_3
    assert emulator.calls.count("GET", f"{app_path}/status") >= 2
    assert emulator.calls.count("GET", "/edit/requests/") == 0

    cancel = out["cancel"]
    assert cancel == {
        "request_id": cancel["request_id"],
        "status": "Completed",
        "error": "Request was cancelled",
        "error_type": "request_cancelled",
    }
    assert emulator.calls.count("PUT", f"/fal-ai/flux-2/requests/{cancel['request_id']}/cancel")

    invalid = out["invalid"]
    assert invalid["status_code"] == 422
    locations = [tuple(error["loc"][:2]) for error in invalid["detail"]]
    assert ("body", "prompt") in locations
    assert ("body", "image_size") in locations
    assert all(error["msg"] and error["type"] for error in invalid["detail"])
    assert len(emulator.ledger) == 3  # the refused submission is not billed


def test_fal_client_rejects_unknown_status_and_reads_failures(
    tls_emulator: tuple[FalEmulator, str], certificate: tuple[Path, Path]
) -> None:
    emulator, base_url = tls_emulator
    emulator.reset(Knobs(seed=3, failure_rate=1.0, unknown_status=1))

    out = run_sdk("broken", base_url, emulator, certificate[0])

    assert out["unknown_status"] == "Unknown status: SUSPENDED"  # the SDK refuses it too
    assert out["failed"] == {"status_code": 500, "error_type": "runner_server_error"}
    assert out["failed_status"] == {"status": "Completed", "error_type": "runner_server_error"}
