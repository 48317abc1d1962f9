"""The egress exception tree (see the package docstring for when each is raised)."""

from __future__ import annotations


class EgressError(Exception):
    """Base of every error raised by :mod:`app.kit.egress`."""


class EgressRefused(EgressError):
    """The URL or the address it resolves to is not allowed by the policy.

    ``reason`` is a human-readable sentence naming what was wrong (scheme, port, userinfo, the
    forbidden address and its range); it never contains the URL's path or query, so it is safe to
    show to the client who supplied the URL. ``code`` is a short machine-readable tag: one of
    ``malformed``, ``scheme``, ``userinfo``, ``host``, ``port``, ``address``.
    """

    def __init__(self, reason: str, *, code: str = "address") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class EgressTimeout(EgressError):
    """DNS, connect, or the total deadline (connect + headers + body) ran out."""


class EgressBodyTooLarge(EgressError):
    """The response body exceeded ``max_bytes``; the connection was closed without reading on."""

    def __init__(self, max_bytes: int, *, declared: int | None = None) -> None:
        if declared is not None:
            message = f"response declares {declared} bytes, over the {max_bytes}-byte limit"
        else:
            message = f"response body exceeded the {max_bytes}-byte limit"
        super().__init__(message)
        self.max_bytes = max_bytes
        self.declared = declared


class EgressConnectError(EgressError):
    """No usable connection: refused, reset, TLS failure, malformed or truncated response."""


class EgressResolveError(EgressConnectError):
    """The host name did not resolve (or resolved to nothing)."""
