"""Safe egress: the policy table, DNS-rebinding pinning, redirects, body cap, deadlines, leaks.

Nothing here touches real DNS or any network beyond loopback: host names are answered by fake
resolvers and the servers are started on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from app.kit.egress import (
    FORBIDDEN_NETWORKS,
    EgressBodyTooLarge,
    EgressConnectError,
    EgressError,
    EgressPolicy,
    EgressRefused,
    EgressResolveError,
    EgressTimeout,
    SafeHttp,
    check_url,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
TEREDO = "2001:0:4136:e378:8000:63bf:3fff:fdd2"

FORBIDDEN = [
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "fd00:ec2::254",
    "100.64.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",
    "64:ff9b:1::a00:1",
    "2002:a00:1::1",
    TEREDO,
    "::",
    "::7f00:1",
    "fe80::1",
    "ff02::1",
    "100::1",
    "2001:db8::1",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "172.31.255.255",
    "100.127.255.254",
]


class FakeResolver:
    """Answers from a table; records every lookup."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise OSError(f"fake NXDOMAIN for {host}")
        return list(self.table[host])


class RebindingResolver:
    """First answer, then the second one for every later lookup (a DNS-rebinding attacker)."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = (first, then)
        self.calls = 0

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.answers[0] if self.calls == 1 else self.answers[1]]


def bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


LOOPBACK_OK = ("127.0.0.0/8",)


def loopback_policy(port: int, **overrides: Any) -> EgressPolicy:
    values: dict[str, Any] = {
        "allow_http": True,
        "allowed_ports": frozenset({port}),
        "allow_networks": LOOPBACK_OK,
        "max_bytes": 64 * 1024,
        "connect_timeout": 2.0,
        "total_timeout": 5.0,
    }
    values.update(overrides)
    return EgressPolicy(**values)


# --------------------------------------------------------------------------- policy: refusals


@pytest.mark.parametrize("address", FORBIDDEN)
async def test_forbidden_ip_literal_is_refused_without_resolving(address: str) -> None:
    resolver = FakeResolver()
    with pytest.raises(EgressRefused) as info:
        await check_url(f"https://{bracket(address)}/x", EgressPolicy(), resolver)
    assert info.value.code == "address"
    assert str(ipaddress.ip_address(address)) in info.value.reason
    assert resolver.calls == []


@pytest.mark.parametrize("address", FORBIDDEN)
async def test_name_resolving_to_forbidden_address_is_refused(address: str) -> None:
    resolver = FakeResolver({"evil.test": [address]})
    with pytest.raises(EgressRefused) as info:
        await check_url("https://evil.test/x", EgressPolicy(), resolver)
    assert info.value.code == "address"
    assert "evil.test" in info.value.reason
    assert str(ipaddress.ip_address(address)) in info.value.reason
    assert resolver.calls == [("evil.test", 443)]


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("2002:a00:1::1", "10.0.0.1"),
        (TEREDO, "192.0.2.45"),
    ],
)
async def test_refusal_names_the_embedded_ipv4(address: str, embedded: str) -> None:
    with pytest.raises(EgressRefused) as info:
        await check_url(f"https://{bracket(address)}/", EgressPolicy())
    assert f"embeds IPv4 {embedded}" in info.value.reason


@pytest.mark.parametrize(
    "answers",
    [[PUBLIC_V4, "10.0.0.1"], ["10.0.0.1", PUBLIC_V4], [PUBLIC_V6, "::1"], [PUBLIC_V4, "fe80::1"]],
)
async def test_one_forbidden_address_among_public_ones_refuses(answers: list[str]) -> None:
    resolver = FakeResolver({"mixed.test": answers})
    with pytest.raises(EgressRefused, match="forbidden address"):
        await check_url("https://mixed.test/", EgressPolicy(), resolver)
    assert len(resolver.calls) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://public.test/file",
        "file:///etc/passwd",
        "gopher://public.test:70/_GET",
        "data:text/plain;base64,aGk=",
        "ws://public.test/",
        "javascript:alert(1)",
        "//public.test/no-scheme",
    ],
)
async def test_non_http_schemes_are_refused(url: str) -> None:
    resolver = FakeResolver({"public.test": [PUBLIC_V4]})
    with pytest.raises(EgressRefused) as info:
        await check_url(url, EgressPolicy(allow_http=True), resolver)
    assert info.value.code == "scheme"
    assert resolver.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@public.test/",
        "https://user@public.test/",
        "https://:pw@public.test/",
        "https://@public.test/",
        f"https://user:pw@{PUBLIC_V4}/",
        "https://public.test@127.0.0.1/",
    ],
)
async def test_userinfo_is_refused(url: str) -> None:
    resolver = FakeResolver({"public.test": [PUBLIC_V4]})
    with pytest.raises(EgressRefused) as info:
        await check_url(url, EgressPolicy(), resolver)
    assert info.value.code == "userinfo"
    assert "pw" not in info.value.reason
    assert resolver.calls == []


@pytest.mark.parametrize(
    "url", ["https://public.test:8443/", f"https://{PUBLIC_V4}:22/", "https://public.test:0/"]
)
async def test_disallowed_port_is_refused(url: str) -> None:
    with pytest.raises(EgressRefused) as info:
        await check_url(url, EgressPolicy(), FakeResolver({"public.test": [PUBLIC_V4]}))
    assert info.value.code == "port"


async def test_configured_port_is_allowed() -> None:
    resolver = FakeResolver({"public.test": [PUBLIC_V4]})
    policy = EgressPolicy(allowed_ports=frozenset({8443}))
    target = await check_url("https://public.test:8443/", policy, resolver)
    assert target.port == 8443
    with pytest.raises(EgressRefused, match="port 443"):
        await check_url("https://public.test/", policy, resolver)


async def test_http_only_when_the_policy_allows_it() -> None:
    resolver = FakeResolver({"public.test": [PUBLIC_V4]})
    with pytest.raises(EgressRefused) as info:
        await check_url("http://public.test/", EgressPolicy(), resolver)
    assert info.value.code == "scheme"
    target = await check_url("http://public.test/", EgressPolicy(allow_http=True), resolver)
    assert (target.scheme, target.port) == ("http", 80)


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/",
        "https://0x7f000001/",
        "https://127.1/",
        "https://0177.0.0.1/",
        "https://10.0.0.1.5/",
        "https://name.123/",
    ],
)
async def test_non_canonical_numeric_hosts_are_refused(url: str) -> None:
    resolver = FakeResolver()
    with pytest.raises(EgressRefused) as info:
        await check_url(url, EgressPolicy(), resolver)
    assert info.value.code == "host"
    assert resolver.calls == []


@pytest.mark.parametrize(
    "url", ["https:///path", "https://", "https://exa mple.test/", "https://x.test/\r\nX: y", ""]
)
async def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(EgressRefused):
        await check_url(url, EgressPolicy(), FakeResolver())


async def test_public_addresses_pass_without_connecting() -> None:
    resolver = FakeResolver({"public.test": [PUBLIC_V6, PUBLIC_V4, PUBLIC_V4]})
    literal = await check_url(f"https://{PUBLIC_V4}/img.png", EgressPolicy(), resolver)
    assert literal.addresses == (PUBLIC_V4,)
    assert literal.ip_literal
    assert resolver.calls == []

    named = await check_url("https://Public.TEST/img.png?x=1", EgressPolicy(), resolver)
    assert named.addresses == (PUBLIC_V6, PUBLIC_V4)  # de-duplicated, order kept
    assert named.host == "public.test"
    assert named.host_header == "public.test"
    assert named.tls_server_name == "public.test"
    assert resolver.calls == [("public.test", 443)]

    v6 = await check_url(f"https://[{PUBLIC_V6}]:443/", EgressPolicy(), resolver)
    assert v6.tls_server_name is None  # no SNI for IP literals


async def test_refusal_reasons_do_not_leak_path_or_query() -> None:
    resolver = FakeResolver({"evil.test": ["10.0.0.1"]})
    for url in ("https://10.0.0.1/hook/s3cr3t?token=t0k3n", "https://evil.test/s3cr3t?token=t0k3n"):
        with pytest.raises(EgressRefused) as info:
            await check_url(url, EgressPolicy(), resolver)
        assert "s3cr3t" not in str(info.value)
        assert "t0k3n" not in str(info.value)


async def test_resolution_failures() -> None:
    with pytest.raises(EgressResolveError, match=r"nowhere\.test"):
        await check_url("https://nowhere.test/", EgressPolicy(), FakeResolver())
    with pytest.raises(EgressResolveError, match="no address"):
        await check_url("https://empty.test/", EgressPolicy(), FakeResolver({"empty.test": []}))
    with pytest.raises(EgressRefused, match="not an IP address"):
        await check_url("https://odd.test/", EgressPolicy(), FakeResolver({"odd.test": ["x"]}))
    assert issubclass(EgressResolveError, EgressConnectError)


async def test_slow_resolver_is_bounded_by_the_connect_timeout() -> None:
    class Stuck:
        async def resolve(self, host: str, port: int) -> list[str]:
            await asyncio.sleep(30)
            return [PUBLIC_V4]

    started = time.monotonic()
    with pytest.raises(EgressTimeout):
        await check_url("https://slow.test/", EgressPolicy(connect_timeout=0.2), Stuck())
    assert time.monotonic() - started < 2


async def test_system_resolver_checks_localhost() -> None:
    # getaddrinfo("localhost") answers from /etc/hosts: loopback, so refused.
    with pytest.raises(EgressError):
        await check_url("https://localhost/", EgressPolicy())


# --------------------------------------------------------------------------- policy: allowlist


async def test_operator_networks_allow_internal_addresses() -> None:
    policy = EgressPolicy(allow_networks=("10.0.0.0/8", "fd00:ec2::/32"))
    resolver = FakeResolver({"hooks.internal": ["10.1.2.3"], "mixed.internal": ["10.1.2.3", "::1"]})
    assert (await check_url("https://10.9.9.9/", policy, resolver)).addresses == ("10.9.9.9",)
    assert (await check_url("https://hooks.internal/", policy, resolver)).addresses == ("10.1.2.3",)
    assert await check_url("https://[::ffff:10.1.2.3]/", policy, resolver)  # same destination
    assert await check_url("https://[fd00:ec2::1]/", policy, resolver)
    for url in ("https://127.0.0.1/", "https://192.168.1.1/", "https://mixed.internal/"):
        with pytest.raises(EgressRefused):
            await check_url(url, policy, resolver)
    # the allowlist does not waive scheme, port or userinfo rules
    for url in ("http://10.1.1.1/", "https://10.1.1.1:8080/", "https://u:p@10.1.1.1/"):
        with pytest.raises(EgressRefused):
            await check_url(url, policy, resolver)


async def test_operator_host_names_may_resolve_anywhere() -> None:
    policy = EgressPolicy(allow_hosts=frozenset({"Hooks.Internal."}))
    resolver = FakeResolver({"hooks.internal": ["192.168.1.5"], "other.internal": ["192.168.1.5"]})
    target = await check_url("https://hooks.internal/receive", policy, resolver)
    assert target.addresses == ("192.168.1.5",)
    with pytest.raises(EgressRefused):
        await check_url("https://other.internal/", policy, resolver)
    with pytest.raises(EgressRefused):  # names do not cover literals
        await check_url("https://192.168.1.5/", policy, resolver)


async def test_nat64_is_judged_by_its_embedded_address_only_when_enabled() -> None:
    public_nat64 = "64:ff9b::5db8:d70e"  # 93.184.215.14
    with pytest.raises(EgressRefused):
        await check_url(f"https://[{public_nat64}]/", EgressPolicy())
    policy = EgressPolicy(allow_nat64=True)
    assert await check_url(f"https://[{public_nat64}]/", policy)
    with pytest.raises(EgressRefused, match=r"NAT64 for 10\.0\.0\.1"):
        await check_url("https://[64:ff9b::a00:1]/", policy)


def test_policy_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="allow_networks"):
        EgressPolicy(allow_networks=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="ports"):
        EgressPolicy(allowed_ports=frozenset({0}))
    with pytest.raises(ValueError, match="max_bytes"):
        EgressPolicy(max_bytes=0)
    policy = EgressPolicy(allow_hosts=frozenset({"10.0.0.7"}))  # an address: becomes a network
    assert policy.allow_networks == ("10.0.0.7/32",)
    assert policy.allow_hosts == frozenset()


def test_forbidden_table_covers_the_spec() -> None:
    networks = {str(n) for n, _ in FORBIDDEN_NETWORKS}
    spec = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
        "2001::/32", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8", "100::/64",
    ]  # fmt: skip
    for network in spec:
        assert network in networks


# --------------------------------------------------------------------------- servers


class WebServer:
    """A well-behaved aiohttp server on 127.0.0.1 only, recording what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_post("/redirect", self._redirect)
        app.router.add_get("/bytes/{n}", self._bytes)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _record(self, request: web.Request, body: bytes) -> None:
        assert request.transport is not None
        self.seen.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "host": request.headers.get("Host"),
                "local": request.transport.get_extra_info("sockname")[0],
                "headers": dict(request.headers),
                "body": body,
            }
        )

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._record(request, body)
        return web.json_response({"ok": True, "n": len(body)})

    async def _redirect(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        status = 307 if request.method == "POST" else 302
        return web.Response(status=status, headers={"Location": "http://127.0.0.1/admin"})

    async def _bytes(self, request: web.Request) -> web.Response:
        self._record(request, b"")
        return web.Response(body=b"x" * int(request.match_info["n"]), content_type="image/png")


class MisbehavingServer:
    """Raw HTTP over asyncio streams: endless bodies, drips, lying Content-Length.

    Tracks how many connections it accepted, how many are still open (a connection counts as
    closed once the client hung up: the server sees EOF or a failed write), and bytes sent.
    """

    CEILING = 256 * 1024 * 1024

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.sent: list[int] = []
        self.handlers: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def wait_all_closed(self, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert self.open == 0, f"{self.open} connections still open on the server"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.accepted += 1
        self.open += 1
        counter = [0]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            producer = asyncio.ensure_future(self._produce(path, writer, counter))
            hangup = asyncio.ensure_future(reader.read())  # EOF once the client closes
            done, pending = await asyncio.wait({producer, hangup}, return_when="FIRST_COMPLETED")
            for pending_task in pending:
                pending_task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for finished in done:
                if not finished.cancelled():
                    finished.exception()  # retrieved: resets are expected here
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.sent.append(counter[0])
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self.open -= 1
            self.handlers.discard(task)

    async def _produce(self, path: str, writer: asyncio.StreamWriter, counter: list[int]) -> None:
        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()
            counter[0] += len(data)

        if path == "/endless":  # no Content-Length: the body lasts until the server closes
            await send(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
            chunk = b"\0" * 65536
            while counter[0] < self.CEILING:
                await send(chunk)
        elif path == "/declared":  # declares a huge body, sends a little, then stalls
            await send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\nabc")
        elif path == "/drip":  # headers at once, then the body at one byte per second
            await send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                await send(b"x")
                await asyncio.sleep(1)
        elif path == "/drip-headers":  # even the headers arrive one byte per second
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx":
                await send(bytes([byte]))
                await asyncio.sleep(1)
        await asyncio.sleep(3600)  # keep the connection open until the client hangs up


@pytest.fixture
async def web_server() -> AsyncIterator[WebServer]:
    server = WebServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def bad_server() -> AsyncIterator[MisbehavingServer]:
    server = MisbehavingServer()
    await server.start()
    yield server
    await server.stop()


# --------------------------------------------------------------------------- SafeHttp


async def test_dns_rebinding_is_defeated_by_pinning(web_server: WebServer) -> None:
    resolver = RebindingResolver("127.0.0.1", "127.0.0.2")
    url = f"http://rebind.test:{web_server.port}/echo"
    async with SafeHttp(loopback_policy(web_server.port), resolver=resolver) as http:
        response = await http.get(url)
        assert response.status == 200
        assert response.address == "127.0.0.1"
        assert resolver.calls == 1
        assert web_server.seen[-1]["local"] == "127.0.0.1"
        assert web_server.seen[-1]["host"] == f"rebind.test:{web_server.port}"

        # The attacker's second answer is what this request checks and uses: nothing listens
        # on 127.0.0.2, so it fails, and neither the first answer nor a pooled connection to
        # 127.0.0.1 is reused.
        with pytest.raises(EgressConnectError):
            await http.get(url)
        assert resolver.calls == 2
        assert len(web_server.seen) == 1


async def test_resolver_is_called_once_per_request(web_server: WebServer) -> None:
    resolver = FakeResolver({"hook.test": ["127.0.0.1"]})
    async with SafeHttp(loopback_policy(web_server.port), resolver=resolver) as http:
        for _ in range(3):
            assert (await http.get(f"http://hook.test:{web_server.port}/echo")).status == 200
    assert resolver.calls == [("hook.test", web_server.port)] * 3


async def test_next_checked_address_is_tried_when_connect_fails(web_server: WebServer) -> None:
    resolver = FakeResolver({"multi.test": ["127.0.0.3", "127.0.0.1"]})
    async with SafeHttp(loopback_policy(web_server.port), resolver=resolver) as http:
        response = await http.get(f"http://multi.test:{web_server.port}/echo")
    assert response.address == "127.0.0.1"
    assert len(resolver.calls) == 1


async def test_safehttp_refuses_before_connecting(web_server: WebServer) -> None:
    resolver = FakeResolver({"evil.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow_http=True, allowed_ports=frozenset({web_server.port}))
    async with SafeHttp(policy, resolver=resolver) as http:
        with pytest.raises(EgressRefused):
            await http.get(f"http://evil.test:{web_server.port}/echo")
        with pytest.raises(EgressRefused):
            await http.post(f"http://127.0.0.1:{web_server.port}/echo", b"{}")
    assert web_server.seen == []


async def test_post_keeps_host_header_and_sends_body(web_server: WebServer) -> None:
    resolver = FakeResolver({"hooks.example.test": ["127.0.0.1"]})
    policy = loopback_policy(web_server.port)
    async with SafeHttp(policy, resolver=resolver) as http:
        response = await http.post(
            f"http://hooks.example.test:{web_server.port}/echo?id=1",
            b'{"event":"job.succeeded"}',
            {"Content-Type": "application/json", "Webhook-Signature": "v1,abc", "Host": "x"},
        )
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.body == b'{"ok": true, "n": 25}'
    seen = web_server.seen[-1]
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo?id=1"
    assert seen["host"] == f"hooks.example.test:{web_server.port}"
    assert seen["body"] == b'{"event":"job.succeeded"}'
    assert seen["headers"]["Webhook-Signature"] == "v1,abc"
    assert "Cookie" not in seen["headers"]


async def test_redirects_are_returned_not_followed(web_server: WebServer) -> None:
    resolver = FakeResolver({"redir.test": ["127.0.0.1"]})
    async with SafeHttp(loopback_policy(web_server.port), resolver=resolver) as http:
        got = await http.get(f"http://redir.test:{web_server.port}/redirect")
        posted = await http.post(f"http://redir.test:{web_server.port}/redirect", b"x")
    assert (got.status, got.is_redirect, got.location) == (302, True, "http://127.0.0.1/admin")
    assert (posted.status, posted.location) == (307, "http://127.0.0.1/admin")
    assert [s["path"] for s in web_server.seen] == ["/redirect", "/redirect"]


async def test_body_cap_is_exact(web_server: WebServer) -> None:
    policy = loopback_policy(web_server.port, max_bytes=1000)
    async with SafeHttp(policy) as http:
        base = f"http://127.0.0.1:{web_server.port}/bytes"
        response = await http.get(f"{base}/1000")
        assert len(response.body) == 1000
        assert response.content_type == "image/png"
        with pytest.raises(EgressBodyTooLarge) as info:
            await http.get(f"{base}/1001")
        assert info.value.declared == 1001


async def test_declared_oversize_is_refused_before_reading(bad_server: MisbehavingServer) -> None:
    async with SafeHttp(loopback_policy(bad_server.port)) as http:
        with pytest.raises(EgressBodyTooLarge, match="declares 1000000000 bytes"):
            await http.get(f"http://127.0.0.1:{bad_server.port}/declared")
    await bad_server.wait_all_closed()


async def test_endless_body_is_cut_off_at_the_cap(bad_server: MisbehavingServer) -> None:
    async with SafeHttp(loopback_policy(bad_server.port, max_bytes=64 * 1024)) as http:
        started = time.monotonic()
        with pytest.raises(EgressBodyTooLarge, match="65536-byte limit"):
            await http.get(f"http://127.0.0.1:{bad_server.port}/endless")
        assert time.monotonic() - started < 2
    await bad_server.wait_all_closed()
    # the server could push only what fits in socket buffers before the client hung up
    assert bad_server.sent[0] < 32 * 1024 * 1024 < MisbehavingServer.CEILING


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
async def test_slow_server_is_abandoned_at_the_deadline(
    bad_server: MisbehavingServer, path: str
) -> None:
    async with SafeHttp(loopback_policy(bad_server.port, total_timeout=0.5)) as http:
        started = time.monotonic()
        with pytest.raises(EgressTimeout, match=r"total deadline of 0\.5s"):
            await http.get(f"http://127.0.0.1:{bad_server.port}{path}")
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5
    await bad_server.wait_all_closed()


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with SafeHttp(loopback_policy(port)) as http:
        with pytest.raises(EgressConnectError, match=re.escape(f"127.0.0.1:{port}")):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_connect_timeout_applies_to_each_attempt() -> None:
    # A listener whose accept queue is full drops new SYNs: connecting hangs.
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        await asyncio.sleep(0.05)
        resolver = FakeResolver({"hang.test": ["127.0.0.1", "127.0.0.1"]})
        policy = loopback_policy(port, connect_timeout=0.2, total_timeout=5.0)
        async with SafeHttp(policy, resolver=resolver) as http:
            started = time.monotonic()
            with pytest.raises(EgressTimeout, match=r"connecting to hang\.test"):
                await http.get(f"http://hang.test:{port}/")
            assert 0.15 <= time.monotonic() - started < 1.5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_no_leaks_after_many_slow_and_oversized_requests(
    bad_server: MisbehavingServer, web_server: WebServer
) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    policy = loopback_policy(bad_server.port, total_timeout=0.5, max_bytes=16 * 1024)
    policy = EgressPolicy(
        allow_http=True,
        allowed_ports=frozenset({bad_server.port, web_server.port}),
        allow_networks=LOOPBACK_OK,
        max_bytes=policy.max_bytes,
        total_timeout=policy.total_timeout,
        connect_timeout=policy.connect_timeout,
    )
    paths = ["/drip", "/drip-headers", "/endless", "/declared"]
    async with SafeHttp(policy, max_connections=200) as http:
        await http.get(f"http://127.0.0.1:{web_server.port}/echo")  # session + a pooled conn
        before = open_fds()
        results = await asyncio.gather(
            *(http.get(f"http://127.0.0.1:{bad_server.port}{paths[i % 4]}") for i in range(100)),
            return_exceptions=True,
        )
        kinds = {type(r) for r in results}
        assert kinds == {EgressTimeout, EgressBodyTooLarge}, results[:4]
        assert sum(isinstance(r, EgressTimeout) for r in results) == 50
        await bad_server.wait_all_closed()
        await asyncio.sleep(0.05)
        assert bad_server.accepted == 100
        assert open_fds() <= before + 2
        # still usable afterwards
        assert (await http.get(f"http://127.0.0.1:{web_server.port}/echo")).status == 200


# --------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=egress test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    _openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr",
             "-subj", "/CN=secure.test", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:secure.test\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf",
             cwd=d)  # fmt: skip
    return d


async def test_https_keeps_sni_and_verifies_the_original_name(tls_files: Path) -> None:
    names: list[str | None] = []
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls_files / "leaf.pem", tls_files / "leaf.key")

    def on_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server_ctx.sni_callback = on_sni
    server = WebServer()
    await server.start(ssl_context=server_ctx)
    try:
        client_ctx = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
        resolver = FakeResolver({"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        policy = EgressPolicy(allowed_ports=frozenset({server.port}), allow_networks=LOOPBACK_OK)
        async with SafeHttp(policy, resolver=resolver, ssl_context=client_ctx) as http:
            response = await http.post(f"https://secure.test:{server.port}/echo", b"hi")
            assert response.status == 200
            assert names == ["secure.test"]
            assert server.seen[-1]["host"] == f"secure.test:{server.port}"
            # Same address, other name: the certificate does not match, and the pooled
            # connection made for secure.test is not reused for it.
            with pytest.raises(EgressConnectError, match="TLS"):
                await http.get(f"https://other.test:{server.port}/echo")
            assert names[-1] == "other.test"
            # IP literal: verified against the address, which the certificate does not name
            with pytest.raises(EgressConnectError):
                await http.get(f"https://127.0.0.1:{server.port}/echo")
        assert len(server.seen) == 1
    finally:
        await server.stop()
