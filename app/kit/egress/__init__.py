"""Safe egress: the one way imagegate contacts a URL that a user supplied.

Used for client webhooks (imagegate POSTs to them) and input images (imagegate downloads them).

Policy (:class:`EgressPolicy`): https only (http when ``allow_http``), ports in
``allowed_ports`` (80 and 443 by default), a host is required and userinfo (``user:pw@``) is
refused. The host is resolved once through an injectable :class:`Resolver`, and every address it
resolves to must lie outside the forbidden networks (loopback, private, CGNAT, link-local and cloud
metadata, documentation, benchmarking, multicast, reserved, IPv4-mapped, NAT64, 6to4, Teredo,
unique-local, ...; see ``policy.FORBIDDEN_NETWORKS``); an IP-literal host is checked without
resolving. The operator allowlist (``allow_hosts`` names, ``allow_networks`` CIDRs) admits trusted
internal destinations that would otherwise be forbidden.

Transport (:class:`SafeHttp`): connects only to the checked addresses (no second lookup, so DNS
rebinding cannot redirect it), keeps the original ``Host`` header and TLS server name, never
follows redirects (a 3xx is returned as a response), streams the body and stops at ``max_bytes``,
and bounds every call by ``connect_timeout`` (each connection attempt) and ``total_timeout``
(resolution + connect + headers + body).

Public API::

    EgressPolicy(allow_http=False, allowed_ports=frozenset({80, 443}), allow_hosts=frozenset(),
                 allow_networks=(), max_bytes=20 MiB, connect_timeout=5.0, total_timeout=30.0,
                 allow_nat64=False)
    class Resolver(Protocol):
        async def resolve(self, host: str, port: int) -> list[str]
    SystemResolver()                                   # loop.getaddrinfo
    async def check_url(url, policy, resolver=None) -> CheckedTarget
    SafeHttp(policy, *, resolver=None, ssl_context=None, user_agent="imagegate",
             max_connections=100)
        async get(url, *, headers=None) -> EgressResponse
        async post(url, content: bytes, headers=None) -> EgressResponse
        async request(method, url, *, content=None, headers=None) -> EgressResponse
        async aclose()
    EgressResponse(status, headers, body: bytes, content_type: str | None, address)

Exception tree (all raised by ``check_url`` and ``SafeHttp``)::

    EgressError                 base class; catch this for "the URL did not work"
    ├── EgressRefused           policy refusal; .reason names what was wrong (scheme, port,
    │                           userinfo, forbidden address and its range), .code is a short tag;
    │                           safe to show to the client (map to 422 at validation time)
    ├── EgressTimeout           DNS, connect_timeout or total_timeout ran out
    ├── EgressBodyTooLarge      body over max_bytes; the connection was dropped unread
    └── EgressConnectError      refused/reset connection, TLS failure, malformed or cut response
        └── EgressResolveError  the host does not resolve (or resolves to nothing)

Messages never include the URL's path or query (webhook URLs often carry secrets there).
"""

from .check import CheckedTarget, Resolver, SystemResolver, check_url
from .client import EgressResponse, SafeHttp
from .errors import (
    EgressBodyTooLarge,
    EgressConnectError,
    EgressError,
    EgressRefused,
    EgressResolveError,
    EgressTimeout,
)
from .policy import FORBIDDEN_NETWORKS, EgressPolicy

__all__ = [
    "FORBIDDEN_NETWORKS",
    "CheckedTarget",
    "EgressBodyTooLarge",
    "EgressConnectError",
    "EgressError",
    "EgressPolicy",
    "EgressRefused",
    "EgressResolveError",
    "EgressResponse",
    "EgressTimeout",
    "Resolver",
    "SafeHttp",
    "SystemResolver",
    "check_url",
]
