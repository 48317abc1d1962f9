"""Dashboard sessions: a signed, expiring cookie naming the admin key that logged in, and the
CSRF tokens of the login and logout forms.

The cookie holds ``<key id>.<expiry>.<nonce>.<signature>``: no secret, nothing a browser could
use as an API key. The signature is an HMAC under a sub-key of the server secret (its own
purpose, so it can sign nothing else). Every page view still checks the key itself: a revoked,
expired or demoted key ends its sessions at once.

CSRF: the cookies are ``SameSite=Strict`` (a cross-site form never carries them), and both
forms also carry a token bound to a cookie the attacker cannot read: the login form to a
pre-login nonce cookie, the logout form to the session.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from app.kit.crypto import constant_time_equal, derive_key, hmac_sha256_hex

SESSION_COOKIE = "ig_dashboard"
LOGIN_COOKIE = "ig_dashboard_login"
COOKIE_PATH = "/dashboard"
LOGIN_NONCE_TTL_S = 3600


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str
    expires_at: int  # unix seconds
    token: str  # the cookie value, for the logout form's CSRF token


class SessionSigner:
    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "dashboard-session")

    def _sign(self, message: str) -> str:
        return hmac_sha256_hex(self._key, message)

    def issue(self, key_id: str, ttl_s: int, *, not_after: float | None = None) -> Session:
        expires = int(time.time() + ttl_s)
        if not_after is not None:
            expires = min(expires, int(not_after))
        nonce = _nonce()
        payload = f"{key_id}.{expires}.{nonce}"
        return Session(key_id, expires, f"{payload}.{self._sign(payload)}")

    def read(self, token: str | None, *, now: float | None = None) -> Session | None:
        """The session in a cookie value, or None when absent, forged or expired."""
        if not token or len(token) > 256:
            return None
        parts = token.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        key_id, expires, nonce, signature = parts
        if not constant_time_equal(self._sign(f"{key_id}.{expires}.{nonce}"), signature):
            return None
        if int(expires) <= (time.time() if now is None else now):
            return None
        return Session(key_id, int(expires), token)

    def csrf_for(self, purpose: str, bound_to: str) -> str:
        return self._sign(f"csrf:{purpose}:{bound_to}")

    def check_csrf(self, purpose: str, bound_to: str | None, presented: str | None) -> bool:
        if not bound_to or not presented:
            return False
        return constant_time_equal(self.csrf_for(purpose, bound_to), presented)


def _nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode()


def new_login_nonce() -> str:
    return _nonce()


def is_https(request: Request, public_base_url: str | None) -> bool:
    """Secure cookies whenever the browser talks HTTPS (directly or behind a TLS proxy)."""
    return request.url.scheme == "https" or bool(
        public_base_url and public_base_url.startswith("https://")
    )


def set_cookie(response: Response, name: str, value: str, *, max_age: int, secure: bool) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, name: str, *, secure: bool) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, secure=secure, httponly=True, samesite="strict")
