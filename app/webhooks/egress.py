"""The process's clients for user-supplied URLs, built from the operator's egress settings.

Two ``SafeHttp`` clients share one policy shape and one resolver: ``webhooks`` (client webhook
deliveries: https unless ``allow_http_webhooks``, a small response cap, ``webhook_timeout_s``)
and ``inputs`` (input images imagegate downloads itself: http(s), ``input_image_max_bytes``,
``input_image_timeout_s``). Both honour the operator allowlist (``egress_allow_hosts``,
``egress_allow_networks``) and the allowed ports. Tests inject a resolver, so no live DNS is
ever needed to exercise the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.config import ConfigError, Settings
from app.kit.egress import EgressPolicy, Resolver, SafeHttp, SystemResolver


def _policy(settings: Settings, *, http: bool, max_bytes: int, total: float) -> EgressPolicy:
    try:
        return EgressPolicy(
            allow_http=http,
            allowed_ports=frozenset(settings.egress_allowed_ports),
            allow_hosts=frozenset(settings.egress_allow_hosts),
            allow_networks=tuple(settings.egress_allow_networks),
            max_bytes=max_bytes,
            connect_timeout=min(5.0, total),
            total_timeout=total,
        )
    except ValueError as exc:  # e.g. a CIDR that does not parse
        raise ConfigError(f"IMAGEGATE_EGRESS_*: {exc}") from None


@dataclass
class Egress:
    resolver: Resolver = field(default_factory=SystemResolver)
    webhooks: SafeHttp = field(default_factory=lambda: SafeHttp(EgressPolicy()))
    inputs: SafeHttp = field(default_factory=lambda: SafeHttp(EgressPolicy()))

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver | None = None) -> Egress:
        resolver = resolver or SystemResolver()
        webhooks = _policy(
            settings,
            http=settings.allow_http_webhooks,
            max_bytes=settings.webhook_max_response_bytes,
            total=settings.webhook_timeout_s,
        )
        inputs = _policy(
            settings,
            http=True,
            max_bytes=settings.input_image_max_bytes,
            total=settings.input_image_timeout_s,
        )
        agent = "imagegate-webhooks/0.1"
        return cls(
            resolver=resolver,
            webhooks=SafeHttp(webhooks, resolver=resolver, user_agent=agent),
            inputs=SafeHttp(inputs, resolver=resolver, user_agent="imagegate/0.1"),
        )

    async def aclose(self) -> None:
        await self.webhooks.aclose()
        await self.inputs.aclose()
