"""The HTTP server of ``imagegate api``: how long it keeps an idle client connection.

Pooled clients reuse idle connections; a server that closes one just as a client reuses it
fails that request, and clients do not retry a POST. So the keep-alive is a setting
(``IMAGEGATE_HTTP_KEEPALIVE_S``, 75 s by default, longer than usual client pool expiries), and
the server closes an idle connection only after it.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from app.config import Settings
from tests.conftest import SECRET
from tests.procs import processes


def _get_once(sock: socket.socket, host: str) -> bytes:
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection before answering"
        answer += chunk
    return answer


def _closed_by_server_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the idle connection, or None if it stayed open."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return None
    assert data == b"", data
    return time.monotonic() - started


def test_an_idle_connection_is_kept_for_the_configured_keep_alive(tmp_path: Path) -> None:
    assert Settings(_env_file=None).http_keepalive_s == 75  # type: ignore[call-arg]
    env = {
        "IMAGEGATE_SECRET_KEY": SECRET,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_LOG_LEVEL": "warning",
        "IMAGEGATE_HTTP_KEEPALIVE_S": "1",
    }
    with processes(env, tmp_path) as group:
        base = urlsplit(group.api())
        assert base.hostname is not None and base.port is not None
        with socket.create_connection((base.hostname, base.port), timeout=10) as sock:
            assert _get_once(sock, base.netloc).startswith(b"HTTP/1.1 200")
            assert _closed_by_server_within(sock, 0.5) is None  # still open half-way
            # ... and closed by the server once its 1 s passed: well before uvicorn's own 5 s
            # default, with room for a loaded machine.
            closed_after = _closed_by_server_within(sock, 3.0)
            assert closed_after is not None
