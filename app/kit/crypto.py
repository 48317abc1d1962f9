"""Keyed hashes and signatures: API keys are stored only as HMACs, file URLs are signed."""

from __future__ import annotations

import hashlib
import hmac


def hmac_sha256_hex(key: bytes, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def derive_key(master: bytes, purpose: str) -> bytes:
    """One sub-key per purpose, so a leak of one signature kind reveals nothing of another."""
    return hmac.new(master, f"imagegate:{purpose}".encode(), hashlib.sha256).digest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
