"""The README's quickstart, run exactly as written against a real `imagegate serve`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.procs import BIN, free_port, wait_ready

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_script() -> str:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the quickstart has one shell block"
    return blocks[0]


@pytest.mark.slow
def test_quickstart_works_as_written(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")},
        "IMAGEGATE_PORT": str(port),
    }
    server = subprocess.Popen(
        [str(BIN), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        # The only change: the port, so parallel runs never collide on 8000.
        script = quickstart_script().replace("localhost:8000", f"localhost:{port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "fox.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "fox.png: PNG image data, 1344 x 768" in done.stdout
        assert '"status":"completed"' in done.stdout
        # The cancel answer: cancelled at once, or 409 when the simulator already finished.
        last = done.stdout.strip().splitlines()[-1]
        assert '"status":"cancelled"' in last or '"code":"not_cancellable"' in last, last
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after its graceful shutdown; the worker drained first.
    assert server.returncode in (0, -15), output.decode(errors="replace")[-2000:]
    assert b"worker stopped" in output
    assert (tmp_path / ".imagegate" / "admin-key.txt").stat().st_mode & 0o777 == 0o600
    assert b"created an admin API key" in output
