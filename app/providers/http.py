"""Upstream HTTP calls with deadlines, and the one place transport failures are classified.

``httpx-aiohttp`` maps aiohttp's errors onto httpx's classes loosely (a server that drops the
connection after reading our body surfaces as ``httpx.ConnectTimeout``), so classification looks
at the original aiohttp exception: only a failure to *establish* the connection proves the
upstream never saw the request. Everything else after connecting is an unknown outcome for a
submit, and a transient failure for any idempotent call.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
import httpx
import orjson

from app.metrics.upstream import labels_for, observe_call
from app.providers.base import (
    NotAccepted,
    OutcomeUnknown,
    ProtocolViolation,
    ProviderError,
    Rejected,
    TransientError,
)


class Phase(StrEnum):
    SUBMIT = "submit"  # paid: at most once
    POLL = "poll"  # idempotent
    CANCEL = "cancel"  # idempotent


# Enough for any JSON answer that carries URLs; adapters whose answers carry the images raise it.
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Deadlines:
    connect: float = 5.0
    read: float = 30.0
    total: float = 60.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _never_connected(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return True
        if isinstance(cause, httpx.ConnectError) and cause.__cause__ is None:
            return True  # the default httpx transport (tests with MockTransport)
        cause = cause.__cause__
    return False


def classify_transport_error(exc: BaseException, phase: Phase, what: str) -> ProviderError:
    """Map a transport failure (no HTTP answer) onto our failure classes."""
    if _never_connected(exc):
        if phase is Phase.SUBMIT:
            return NotAccepted(f"{what}: could not connect ({type(exc).__name__})")
        return TransientError(f"{what}: could not connect ({type(exc).__name__})")
    if phase is Phase.SUBMIT:
        return OutcomeUnknown(f"{what}: no answer after sending ({type(exc).__name__})")
    return TransientError(f"{what}: {type(exc).__name__} {exc}".strip())


def classify_status(response: httpx.Response, phase: Phase, what: str) -> ProviderError | None:
    """Map an HTTP error status onto our failure classes; ``None`` for a success."""
    status = response.status_code
    if status < 400:
        return None
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    detail = f"{what}: HTTP {status} {response.text[:300]}".strip()
    if status == 429 or status >= 500 or status in (401, 402, 403):
        if phase is Phase.SUBMIT:
            return NotAccepted(detail, retry_after=retry_after, status=status)
        return TransientError(detail, retry_after=retry_after, status=status)
    if phase is Phase.SUBMIT and status in (400, 413, 422):
        return Rejected(detail, status=status)
    return TransientError(detail, retry_after=retry_after, status=status)


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    phase: Phase,
    what: str,
    deadlines: Deadlines,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    labels: tuple[str, str] | None = None,
) -> httpx.Response:
    """Send one upstream call under connect/read/total deadlines; raise a classified error.

    The body is read fully (capped at ``max_bytes``) before returning, so callers parse
    ``response.content`` without further I/O. Each call's time and failure are counted under
    ``labels`` (provider, operation), by default read from ``what`` (``"<provider> <call>"``).
    """
    provider, operation = labels or labels_for(what, phase.value)
    started = time.perf_counter()
    try:
        response = await _send(
            client, method, url, phase, what, deadlines, headers, json, max_bytes
        )
    except ProviderError as exc:
        observe_call(provider, operation, time.perf_counter() - started, exc)
        raise
    observe_call(provider, operation, time.perf_counter() - started)
    return response


async def _send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    phase: Phase,
    what: str,
    deadlines: Deadlines,
    headers: Mapping[str, str] | None,
    json: Any,
    max_bytes: int,
) -> httpx.Response:
    content = orjson.dumps(json) if json is not None else None
    all_headers = {"content-type": "application/json"} if content is not None else {}
    all_headers.update(headers or {})
    timeout = httpx.Timeout(deadlines.read, connect=deadlines.connect)
    try:
        async with asyncio.timeout(deadlines.total):
            request = client.build_request(
                method, url, content=content, headers=all_headers, timeout=timeout
            )
            response = await client.send(request, stream=True)
            try:
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise _too_large(phase, what, max_bytes)
            finally:
                await response.aclose()
    except ProviderError:
        raise
    except (httpx.HTTPError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise classify_transport_error(exc, phase, what) from exc
    response = httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=request
    )
    error = classify_status(response, phase, what)
    if error is not None:
        raise error
    return response


def _too_large(phase: Phase, what: str, limit: int) -> ProviderError:
    message = f"{what}: answer larger than {limit} bytes"
    if phase is Phase.SUBMIT:
        return OutcomeUnknown(message)
    return ProtocolViolation(message)


def parse_json(response: httpx.Response, what: str, phase: Phase) -> Any:
    """Decode a JSON answer; a malformed body after a submit is an unknown outcome."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        message = f"{what}: malformed JSON answer ({response.content[:120]!r})"
        if phase is Phase.SUBMIT:
            raise OutcomeUnknown(message) from exc
        raise ProtocolViolation(message) from exc
