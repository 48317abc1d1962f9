"""Settings: ``IMAGEGATE_*`` environment variables (and a ``.env`` file), validated once at start.

Nested values use ``__``: ``IMAGEGATE_PROVIDERS__REPLICATE__API_KEY=r8_...``. Secrets come only
from the environment; the embedded default (SQLite, no Redis) generates its signing secret once and
keeps it in its data folder, every other setup must set ``IMAGEGATE_SECRET_KEY``.
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.routing.settings import RoutingSettings


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting to fix."""


class ProviderSettings(BaseModel):
    """One configured upstream. ``kind`` picks the adapter and defaults to the entry's name."""

    kind: str | None = None
    enabled: bool = True
    api_key: SecretStr | None = None
    base_url: str | None = None
    webhook_secret: SecretStr | None = None
    model: str | None = None  # upstream model id override (OpenAI-style instances)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=60.0, gt=0)
    first_poll_after_s: float | None = Field(default=None, ge=0)
    poll_cap_s: float | None = Field(default=None, gt=0)
    requests_per_second: float | None = Field(default=None, gt=0)


class SimulatorSettings(BaseModel):
    """The built-in provider that draws placeholder images; no network, no money."""

    enabled: bool | None = None  # None: on when no upstream is configured
    latency_s: float = Field(default=2.0, ge=0)
    latency_jitter: float = Field(default=0.25, ge=0, le=1)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    price_usd: Decimal = Field(default=Decimal("0.003"), ge=0)
    ledger_path: Path | None = None  # append one line per simulated submission


class S3Settings(BaseModel):
    """An S3-compatible bucket for output files (``IMAGEGATE_S3__BUCKET=...`` and so on).

    Credentials left unset fall back to boto3's own chain (``AWS_*`` variables, instance roles).
    """

    endpoint_url: str | None = None  # e.g. http://minio:9000; None: AWS
    bucket: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    prefix: str = ""  # key prefix inside the bucket, e.g. "imagegate/"
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMAGEGATE_",
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path(".imagegate")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "imagegate:"
    secret_key: SecretStr | None = None
    public_base_url: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # How long an idle client connection is kept. Longer than the usual proxy and client pool
    # expiries, so the server is not the side that closes a pooled connection just as a client
    # reuses it (a POST on such a connection fails and is not retried by clients).
    http_keepalive_s: int = Field(default=75, gt=0)
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cors_origins: list[str] = Field(default_factory=list)

    storage_dir: Path | None = None
    file_url_ttl_s: int = Field(default=3600, gt=0)

    db_pool_size: int = Field(default=16, ge=1)  # per process; replicas x pool < max_connections
    db_statement_timeout_s: float = Field(default=10.0, gt=0)
    job_cache_ttl_s: int = Field(default=600, gt=0)
    key_cache_ttl_s: float = Field(default=30.0, ge=0)

    worker_batch_size: int = Field(default=50, ge=1)
    worker_concurrency: int = Field(default=64, ge=1)
    worker_idle_interval_s: float = Field(default=1.0, gt=0)
    lease_ttl_s: float = Field(default=120.0, gt=0)
    submit_unknown_grace_s: float = Field(default=600.0, ge=0)
    max_poll_errors: int = Field(default=20, ge=1)
    output_max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    job_deadline_s: float = Field(default=1800.0, gt=0)

    allow_http_webhooks: bool = False
    catalog_path: Path | None = None
    admin_key_file: Path | None = None

    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)

    # Access control (see app/auth/ratelimit_redis.py for the Redis-down policy).
    rate_limit_per_minute: int | None = Field(default=None, ge=1)  # default per key; None: off
    rate_limit_burst: int | None = Field(default=None, ge=1)  # None: the per-minute rate
    rate_limit_redis_down: Literal["local", "open"] = "local"
    rate_limit_replicas: int = Field(default=1, ge=1)  # API processes sharing limits
    key_roll_grace_s: int = Field(default=86_400, ge=0, le=30 * 86_400)

    # Metrics and dashboard (see app/metrics/__init__.py for the multi-process layout).
    metrics_token: SecretStr | None = None  # when set, /metrics wants "Authorization: Bearer ..."
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)  # `imagegate worker`
    worker_metrics_host: str = "127.0.0.1"
    dashboard_session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)

    # Delivery guarantees: deadlines, result reuse, client webhooks, egress, storage, retention.
    job_deadline_max_s: float = Field(default=86_400.0, gt=0)  # cap on a request's deadline_s
    reuse_results_default: bool = False  # reuse seeded results when a request omits "cache"
    # Seconds before each retry after a failed client webhook (Standard Webhooks' ~1 day).
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18_000.0, 36_000.0, 36_000.0]
    )
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=1)  # +- this fraction
    webhook_timeout_s: float = Field(default=10.0, gt=0)  # one delivery attempt, all in
    webhook_max_response_bytes: int = Field(default=64 * 1024, gt=0)
    egress_allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    egress_allow_hosts: list[str] = Field(default_factory=list)  # trusted internal names
    egress_allow_networks: list[str] = Field(default_factory=list)  # trusted internal CIDRs
    input_image_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    input_image_timeout_s: float = Field(default=5.0, gt=0)
    storage_backend: Literal["local", "s3"] = "local"
    s3: S3Settings = Field(default_factory=S3Settings)
    retention_days: float | None = Field(default=None, gt=0)  # None: keep outputs forever
    retention_sweep_interval_s: float = Field(default=300.0, gt=0)
    sse_keepalive_s: float = Field(default=15.0, gt=0)

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'imagegate.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        """The zero-configuration default: SQLite, no Redis."""
        return self.is_sqlite and not self.redis_url

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "files"

    @property
    def simulator_enabled(self) -> bool:
        if self.simulator.enabled is not None:
            return self.simulator.enabled
        return not any(p.enabled and p.api_key for p in self.providers.values())

    @cached_property
    def signing_key(self) -> bytes:
        """The secret behind API-key HMACs and signed file URLs."""
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value()
            if len(value) < 32:
                raise ConfigError("IMAGEGATE_SECRET_KEY must be at least 32 characters")
            return value.encode()
        if not self.is_embedded:
            raise ConfigError(
                "IMAGEGATE_SECRET_KEY is not set: it is required whenever imagegate runs on "
                "PostgreSQL or Redis (only the embedded default generates its own)"
            )
        return _embedded_secret(self.data_dir / "secret.key")


def _embedded_secret(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of ours won the race
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)
    return value
