"""The process's long-lived parts, built once at start and closed once at stop.

API and worker share one ``Runtime``: engine and session factory, cache and signals (Redis or
in-process), one outbound HTTP client on the aiohttp transport, storage, URL signer, providers,
catalog and the API-key verifier. Nothing here lives in a module global.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from httpx_aiohttp import AiohttpTransport
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.keys import KeyHasher
from app.auth.ratelimit import MemoryLimiter, RateLimiter
from app.auth.ratelimit_redis import build_limiter
from app.auth.service import KeyVerifier
from app.cache import (
    Cache,
    LocalSignals,
    MemoryCache,
    RedisCache,
    RedisSignals,
    Signals,
    connect_redis,
)
from app.config import Settings
from app.db import create_engine, create_sessionmaker
from app.providers.base import Provider
from app.providers.registry import build_providers
from app.routing.catalog import Catalog, load_catalog
from app.routing.health import Health
from app.storage import Storage, UrlSigner, build_storage
from app.webhooks.egress import Egress


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: Cache
    signals: Signals
    http: httpx.AsyncClient
    storage: Storage
    signer: UrlSigner
    providers: dict[str, Provider]
    catalog: Catalog
    hasher: KeyHasher
    keys: KeyVerifier
    redis: Redis | None = None
    health: Health = field(default_factory=Health.unobserved)
    limiter: RateLimiter = field(default_factory=MemoryLimiter)
    egress: Egress = field(default_factory=Egress)  # user-supplied URLs (webhooks, inputs)


def new_http_client() -> httpx.AsyncClient:
    """One pooled client per process; per-call deadlines are set by each caller."""
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits),
        timeout=httpx.Timeout(30.0, connect=5.0),
        headers={"user-agent": "imagegate/0.1"},
        follow_redirects=False,
    )


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    secret = settings.signing_key  # refuses to start without a secret outside embedded mode
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        statement_timeout_s=settings.db_statement_timeout_s,
    )
    sessions = create_sessionmaker(engine)
    redis = connect_redis(settings.redis_url) if settings.redis_url else None
    cache: Cache
    signals: Signals
    if redis is not None:
        cache = RedisCache(redis, settings.redis_prefix)
        redis_signals = RedisSignals(redis, settings.redis_prefix)
        redis_signals.start()
        await redis_signals.ready(timeout=2.0)  # until then waiters re-read on a timer
        signals = redis_signals
    else:
        cache, signals = MemoryCache(), LocalSignals()
    http = new_http_client()
    hasher = KeyHasher(secret)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        cache=cache,
        signals=signals,
        http=http,
        storage=build_storage(settings),
        signer=UrlSigner.from_secret(secret, settings.file_url_ttl_s),
        providers=build_providers(settings, http),
        catalog=load_catalog(settings.catalog_path, settings.simulator.price_usd),
        hasher=hasher,
        keys=KeyVerifier(sessions, hasher, settings.key_cache_ttl_s),
        redis=redis,
        health=Health.build(settings, redis, sessions),
        limiter=build_limiter(
            redis,
            settings.redis_prefix,
            settings.rate_limit_redis_down,
            settings.rate_limit_replicas,
        ),
        egress=Egress.from_settings(settings),
    )
    try:
        yield runtime
    finally:
        if isinstance(signals, RedisSignals):
            await signals.close()
        await http.aclose()
        await runtime.egress.aclose()
        await runtime.storage.aclose()
        await runtime.health.aclose()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
