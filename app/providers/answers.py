"""How a malformed upstream answer is described in our error messages (pydantic's complaints)."""

from __future__ import annotations

from pydantic import ValidationError


def first_complaint(exc: ValidationError) -> str:
    """``where: what`` for the first problem; a problem with the whole answer is at ``body``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


def all_complaints(exc: ValidationError) -> str:
    """Every problem, ``where: what; ...`` (Replicate's objects: several fields often fail)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
