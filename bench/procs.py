"""Child processes: start pinned to a core, wait until they answer, measure, stop by pid.

Every child is started in its own session (a Ctrl-C reaches only the bench, which then stops
the children in order) and, on Linux, with a parent-death signal, so that even a bench killed
with SIGKILL leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcessFailed(RuntimeError):
    """A child exited early or never became ready; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def placement(core: int | None, nice: int = 0) -> list[str]:
    """An argv prefix running a command on one core (``taskset``) and at a niceness."""
    prefix: list[str] = []
    if core is not None and shutil.which("taskset"):
        prefix += ["taskset", "-c", str(core)]
    if nice and shutil.which("nice"):
        prefix += ["nice", "-n", str(nice)]
    return prefix


def pin_self(core: int | None) -> bool:
    """Pin the calling process (the load generator) to ``core``; False when not possible."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        return False
    return True


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the child when the bench dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _renice_autogroup(pid: int, nice: int) -> None:
    """Give the child's own session (autogroup) the niceness too.

    Each child runs in a new session, and with the kernel's autogroup scheduling a process's nice
    value only weighs against processes of its own session; between sessions the autogroup's nice
    decides. Without this, a ``nice 19`` worker still gets an equal share of the core.
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


@dataclass
class Proc:
    """One started child process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    core: int | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (0 once it is gone)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_mb(self) -> float | None:
        try:
            resident = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return round(resident * _PAGE_SIZE / 2**20, 1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM this pid, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


class ProcessGroup:
    """The children of one run; ``stop_all`` stops each by its own pid, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        core: int | None = None,
        nice: int = 0,
        cwd: Path | None = None,
    ) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [*placement(core, nice), *argv],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc = Proc(name, popen, log_path, core)
        self.procs.append(proc)
        if nice:
            _renice_autogroup(proc.pid, nice)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])


async def wait_http_ready(
    proc: Proc, url: str, timeout: float = 60.0, ok: Callable[[int], bool] | None = None
) -> None:
    """Poll ``url`` until it answers (2xx by default); raise with the log tail otherwise."""
    accept = ok or (lambda status: 200 <= status < 300)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ProcessFailed(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url) as response:
                    if accept(response.status):
                        return
            await asyncio.sleep(0.2)
    raise ProcessFailed(f"{proc.name} not ready at {url} after {timeout:.0f}s:\n{proc.log_tail()}")
