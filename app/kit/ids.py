"""Identifiers: a type prefix plus a ULID, so ids sort by creation time (``img_01JD8X...``)."""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def new_job_id() -> str:
    return new_id("img")
