"""Output storage and signed file URLs.

Images are copied here as jobs complete, because upstream URLs expire within an hour. Two
backends share one interface (``Storage``): a local folder (``LocalStorage``, the default) and an
S3-compatible bucket (``S3Storage``, ``IMAGEGATE_STORAGE_BACKEND=s3``). Either way files are
served at ``/v1/files/{key}?exp=&sig=`` (``UrlSigner``); the retention sweep deletes them after
``IMAGEGATE_RETENTION_DAYS``.
"""

from __future__ import annotations

from app.config import Settings
from app.storage.base import Storage, StoredObject
from app.storage.local import LocalStorage
from app.storage.signing import UrlSigner


def build_storage(settings: Settings) -> Storage:
    """The configured backend (the S3 client is only imported when it is used)."""
    if settings.storage_backend == "s3":
        from app.storage.s3 import S3Storage

        return S3Storage(settings.s3)
    return LocalStorage(settings.resolved_storage_dir)


__all__ = ["LocalStorage", "Storage", "StoredObject", "UrlSigner", "build_storage"]
