"""API key format: ``ig_`` + 256-bit random secret (base62) + a 6-character checksum.

The checksum lets a mistyped or truncated key be refused without a database query; the stored
form is an HMAC of the whole key under the server's secret, never the key itself.
"""

from __future__ import annotations

import re
import secrets
import zlib

from app.kit.crypto import derive_key, hmac_sha256_hex

PREFIX = "ig_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SECRET_CHARS = 43  # 62**43 > 2**256
_CHECK_CHARS = 6
KEY_LENGTH = len(PREFIX) + _SECRET_CHARS + _CHECK_CHARS

SCOPES = frozenset({"images:write", "images:read", "usage:read", "admin"})
DEFAULT_SCOPES = ("images:write", "images:read", "usage:read")


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_CHARS)


def generate_key() -> str:
    body = _base62(secrets.randbits(256), _SECRET_CHARS)
    return f"{PREFIX}{body}{_checksum(body)}"


_SHAPE = re.compile(rf"{re.escape(PREFIX)}[0-9A-Za-z]{{{_SECRET_CHARS + _CHECK_CHARS}}}")


def well_formed(key: str) -> bool:
    """Shape and checksum only: cheap, and decides nothing about validity."""
    if _SHAPE.fullmatch(key) is None:
        return False
    body, check = key[len(PREFIX) : -_CHECK_CHARS], key[-_CHECK_CHARS:]
    return secrets.compare_digest(_checksum(body), check)


def display_prefix(key: str) -> str:
    return key[:11]


class KeyHasher:
    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "api-keys")

    def __call__(self, key: str) -> str:
        return hmac_sha256_hex(self._key, key)
