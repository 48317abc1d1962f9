"""``check_url``: the pure policy check (parse, scheme, userinfo, port, resolve once, addresses)."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from yarl import URL

from .errors import EgressError, EgressRefused, EgressResolveError, EgressTimeout
from .policy import EgressPolicy, IPAddress, normalize_host, parse_address

# A last label made only of digits (or a 0x hex number) is no DNS name: it is a legacy IPv4
# spelling such as 2130706433, 127.1 or 0x7f.1 that getaddrinfo would turn into an address.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


class Resolver(Protocol):
    """Turns a host name into IP address strings (the order is the preferred connect order)."""

    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The default resolver: the event loop's ``getaddrinfo`` (TCP addresses, v4 and v6)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        return [str(sockaddr[0]) for _family, _type, _proto, _canon, sockaddr in infos]


@dataclass(frozen=True, slots=True)
class CheckedTarget:
    """A URL that passed the policy, with the addresses it was checked against.

    Connect only to ``addresses``: looking the host up again would reopen DNS rebinding.
    """

    url: URL
    scheme: str
    host: str  # as in the URL: lower-case, IDNA-encoded, IPv6 without brackets
    port: int
    addresses: tuple[str, ...]
    ip_literal: bool

    @property
    def host_header(self) -> str:
        """The ``Host`` header value for the original URL (port only when not the default)."""
        return str(self.url.host_port_subcomponent)

    @property
    def tls_server_name(self) -> str | None:
        """SNI / certificate name for https to a host name; ``None`` for http or IP literals."""
        if self.scheme != "https" or self.ip_literal:
            return None
        return self.host.rstrip(".")


async def check_url(
    url: str | URL, policy: EgressPolicy, resolver: Resolver | None = None
) -> CheckedTarget:
    """Check ``url`` against ``policy``, resolving its host once through ``resolver``.

    Raises :class:`EgressRefused` (policy), :class:`EgressResolveError` (no such host) or
    :class:`EgressTimeout` (resolution took longer than ``policy.connect_timeout``). Makes no
    connection, so it also serves request validation (refuse a client's webhook URL early).
    """
    parsed = _parse(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https"):
        shown = scheme or "none"
        raise EgressRefused(f"scheme {shown!r} is not allowed (use https)", code="scheme")
    if scheme == "http" and not policy.allow_http:
        raise EgressRefused("scheme 'http' is not allowed, use https", code="scheme")
    host = parsed.raw_host
    if not parsed.absolute or not host:
        raise EgressRefused("URL has no host", code="host")
    if "@" in (parsed.raw_authority or "") or "@" in _raw_authority(url):
        raise EgressRefused("URL must not contain credentials (user:password@)", code="userinfo")
    port = parsed.port
    if port is None or port not in policy.allowed_ports:
        allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
        raise EgressRefused(f"port {port} is not allowed (allowed: {allowed})", code="port")

    literal = _literal(host)
    if literal is not None:
        why = policy.address_refusal(literal)
        if why is not None:
            raise EgressRefused(f"address {literal} is forbidden: {why}")
        return CheckedTarget(parsed, scheme, host, port, (str(literal),), ip_literal=True)

    labels = normalize_host(host).split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise EgressRefused(f"host {host!r} is not a canonical IP address", code="host")

    addresses = await _resolve(resolver or SystemResolver(), host, port, policy.connect_timeout)
    if not policy.host_allowed(host):
        for address in addresses:
            why = policy.address_refusal(address)
            if why is not None:
                raise EgressRefused(f"host {host!r} resolves to forbidden address {address}: {why}")
    return CheckedTarget(
        parsed, scheme, host, port, tuple(str(a) for a in addresses), ip_literal=False
    )


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise EgressRefused("URL contains whitespace or control characters", code="malformed")
    try:
        return URL(url)
    except (ValueError, TypeError) as exc:
        raise EgressRefused(f"URL is malformed: {exc}", code="malformed") from None


def _raw_authority(url: str | URL) -> str:
    # yarl drops an empty userinfo ("https://@host/"); refuse any "@" in the authority as written
    return urlsplit(url).netloc if isinstance(url, str) else ""


def _literal(host: str) -> IPAddress | None:
    try:
        return parse_address(host)
    except ValueError:
        return None


async def _resolve(resolver: Resolver, host: str, port: int, limit: float) -> list[IPAddress]:
    try:
        async with asyncio.timeout(limit):
            answers = await resolver.resolve(host, port)
    except EgressError:
        raise
    except TimeoutError:
        raise EgressTimeout(f"resolving {host!r} took longer than {limit:g}s") from None
    except (OSError, UnicodeError) as exc:
        raise EgressResolveError(f"cannot resolve {host!r}: {exc}") from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = parse_address(answer)
        except ValueError:
            raise EgressRefused(
                f"host {host!r} resolved to {answer!r}, which is not an IP address"
            ) from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise EgressResolveError(f"host {host!r} resolved to no address")
    return addresses
