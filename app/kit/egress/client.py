"""``SafeHttp``: requests to user-supplied URLs, pinned to the addresses ``check_url`` approved.

Pinning: the request URL's host is replaced by the checked IP address, while the ``Host`` header
keeps the original host and, for https, the TLS server name (SNI and certificate check) is the
original host name. aiohttp's connection pool is keyed by (address, port, TLS, server name), so a
pooled connection is only ever reused for the same checked address and name (aiohttp releases that
do not key the pool by server name get no reuse at all). The connector's resolver refuses every
lookup, so no second DNS query can happen behind our back.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy

from .check import CheckedTarget, Resolver, SystemResolver, check_url
from .errors import (
    EgressBodyTooLarge,
    EgressConnectError,
    EgressError,
    EgressTimeout,
)
from .policy import EgressPolicy

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# aiohttp keys its pool by server_hostname only in recent releases (aio-libs/aiohttp#12835; 3.14.5
# has it). Without that, a TLS connection verified for one name could be reused for another name
# on the same address, so older releases get no connection reuse at all.
_POOL_KEYED_BY_SNI = "server_hostname" in ConnectionKey._fields


@dataclass(frozen=True, slots=True)
class EgressResponse:
    """A complete response (status, headers, the whole body within ``max_bytes``)."""

    status: int
    headers: CIMultiDictProxy[str] = field(repr=False)
    body: bytes = field(repr=False)
    content_type: str | None  # media type only, lower-case, e.g. "image/png"; None if absent
    address: str  # the checked IP address the request was sent to

    @property
    def is_redirect(self) -> bool:
        return self.status in _REDIRECTS

    @property
    def location(self) -> str | None:
        """The ``Location`` header (never followed by ``SafeHttp``)."""
        return self.headers.get("Location")


class _NoLookups(AbstractResolver):
    """Connector resolver that refuses: every request URL already carries a checked address."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(f"egress: refusing an unchecked DNS lookup of {host!r}")

    async def close(self) -> None:
        return None


class SafeHttp:
    """HTTP client for user-supplied URLs. Create one per process; ``await aclose()`` at exit.

    Every call checks the URL with :func:`check_url` (one resolution), connects only to the
    checked addresses (the next one is tried only when connecting fails), never follows
    redirects, caps the body at ``policy.max_bytes`` and bounds the whole call (resolution,
    connect, headers, body) by ``policy.total_timeout``. Responses are returned whatever their
    status; bodies are not decompressed (``Accept-Encoding: identity`` is sent by default).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "imagegate",
        max_connections: int = 100,
    ) -> None:
        self.policy = policy
        self._resolver: Resolver = resolver or SystemResolver()
        self._ssl = ssl_context
        self._user_agent = user_agent
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> EgressResponse:
        return await self.request("GET", url, headers=headers)

    async def post(
        self, url: str, content: bytes, headers: Mapping[str, str] | None = None
    ) -> EgressResponse:
        return await self.request("POST", url, content=content, headers=headers)

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> EgressResponse:
        deadline = self.policy.total_timeout
        try:
            async with asyncio.timeout(deadline):
                target = await check_url(url, self.policy, self._resolver)
                return await self._send(method, target, content, headers)
        except TimeoutError:
            raise EgressTimeout(f"request exceeded the total deadline of {deadline:g}s") from None

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> SafeHttp:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("SafeHttp is closed")
        if self._session is None:
            context = self._ssl or ssl.create_default_context(cafile=certifi.where())
            connector = aiohttp.TCPConnector(
                ssl=context,
                resolver=_NoLookups(),
                use_dns_cache=False,
                limit=self._max_connections,
                force_close=not _POOL_KEYED_BY_SNI,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # never route through *_PROXY from the environment
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=None,
                    sock_read=None,
                    sock_connect=self.policy.connect_timeout,
                ),
            )
        return self._session

    def _headers(self, target: CheckedTarget, extra: Mapping[str, str] | None) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(
            {"User-Agent": self._user_agent, "Accept-Encoding": "identity"}
        )
        for name, value in (extra or {}).items():
            if name.lower() != "host":
                headers[name] = value
        headers["Host"] = target.host_header
        return headers

    async def _send(
        self,
        method: str,
        target: CheckedTarget,
        content: bytes | None,
        extra_headers: Mapping[str, str] | None,
    ) -> EgressResponse:
        session = self._get_session()
        headers = self._headers(target, extra_headers)
        where = f"{target.host}:{target.port}"
        last: Exception | None = None
        for address in target.addresses:
            try:
                response = await session.request(
                    method,
                    target.url.with_host(address),
                    headers=headers,
                    data=content,
                    allow_redirects=False,
                    server_hostname=target.tls_server_name,
                )
            except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
                if isinstance(exc, aiohttp.ClientSSLError):
                    raise EgressConnectError(f"TLS with {where} failed: {exc}") from exc
                last = exc  # nothing was sent: the next checked address may work
                continue
            except aiohttp.ServerTimeoutError as exc:
                raise EgressTimeout(f"{where} timed out: {exc}") from exc
            except (aiohttp.ClientError, ValueError) as exc:
                raise EgressConnectError(f"request to {where} failed: {exc}") from exc
            try:
                body = await _read_capped(response, self.policy.max_bytes)
            except BaseException:
                response.close()  # drop the connection; do not drain the rest
                raise
            response.release()
            return EgressResponse(
                status=response.status,
                headers=response.headers,
                body=body,
                content_type=_media_type(response.headers.get("Content-Type")),
                address=address,
            )
        if isinstance(last, asyncio.TimeoutError):
            raise EgressTimeout(f"connecting to {where} timed out") from last
        raise EgressConnectError(f"cannot connect to {where}: {last}") from last


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise EgressBodyTooLarge(limit, declared=declared)
    body = bytearray()
    try:
        while chunk := await response.content.readany():
            if len(body) + len(chunk) > limit:
                raise EgressBodyTooLarge(limit)
            body += chunk
    except EgressError:
        raise
    except aiohttp.ServerTimeoutError as exc:
        raise EgressTimeout(f"reading the response timed out: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise EgressConnectError(f"reading the response failed: {exc}") from exc
    return bytes(body)


def _media_type(value: str | None) -> str | None:
    if not value:
        return None
    media = value.split(";", 1)[0].strip().lower()
    return media or None
