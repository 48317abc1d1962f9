"""Signed file URLs: ``/v1/files/{key}?exp=&sig=``, an HMAC over key and expiry.

An ``<img src>`` can load such a URL without an API key, and it stops working at ``exp``. Both
storage backends are served through these URLs (S3 objects are streamed by the gateway), so a
client never learns where the bytes live and an internal S3 endpoint never has to be public.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.kit.crypto import constant_time_equal, derive_key, hmac_sha256_hex


@dataclass(frozen=True, slots=True)
class UrlSigner:
    """Signs and checks ``/v1/files`` URLs."""

    key: bytes
    ttl_s: int

    @classmethod
    def from_secret(cls, secret: bytes, ttl_s: int) -> UrlSigner:
        return cls(derive_key(secret, "files"), ttl_s)

    def signature(self, storage_key: str, exp: int) -> str:
        return hmac_sha256_hex(self.key, f"{storage_key}\n{exp}")

    def sign(self, storage_key: str, *, now: float | None = None) -> str:
        exp = int((now if now is not None else time.time()) + self.ttl_s)
        # Round expiry up to the minute so repeated GETs return identical, cacheable URLs.
        exp += -exp % 60
        return f"/v1/files/{storage_key}?exp={exp}&sig={self.signature(storage_key, exp)}"

    def verify(self, storage_key: str, exp: int, sig: str, *, now: float | None = None) -> bool:
        if exp < (now if now is not None else time.time()):
            return False
        return constant_time_equal(self.signature(storage_key, exp), sig)
