"""The core.today adapter's I/O: create, get and cancel (``DELETE``) predictions; webhook hints."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import httpx
import orjson

from app.config import ProviderSettings
from app.providers.base import (
    Capabilities,
    NotAccepted,
    OutcomeUnknown,
    PollTiming,
    ProtocolViolation,
    Submitted,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
    WebhookRefused,
    WebhookUpdate,
)
from app.providers.coretoday.mapping import (
    DEFAULT_BASE_URL,
    build_create_body,
    parse_job,
    to_state,
    webhook_hint,
)
from app.providers.http import Deadlines, Phase, parse_json, send
from app.providers.replicate.client import CAPABILITIES as REPLICATE_CAPABILITIES

# core.today runs the same Replicate model, so it can do what Replicate can. Its webhooks are
# unsigned: they only prompt a poll.
CAPABILITIES = REPLICATE_CAPABILITIES
# Replicate's timing (p50 ~5.8 s) plus a proxy hop whose overhead is unknown: look a little
# later than for Replicate itself, same cap.
FIRST_POLL_AFTER_S = 3.5
POLL_CAP_S = 10.0


class CoreTodayProvider:
    """FLUX.2 [dev] through core.today (``black-forest-labs/flux-2-dev``, 25 credits a run)."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        self._name = name
        self._settings = settings
        self._http = http
        # The base includes the API version: https://api.core.today/v1
        self._base_url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._deadlines = Deadlines(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            total=settings.total_timeout_s,
        )

    @property
    def name(self) -> str:
        return self._name

    def capabilities(self, model: str) -> Capabilities:
        return CAPABILITIES

    def poll_timing(self) -> PollTiming:
        first = self._settings.first_poll_after_s
        cap = self._settings.poll_cap_s
        return PollTiming(
            first_poll_after=FIRST_POLL_AFTER_S if first is None else first,
            cap=POLL_CAP_S if cap is None else cap,
        )

    async def submit(self, request: UpstreamRequest) -> Submitted:
        if self._settings.api_key is None:
            raise NotAccepted(f"{self._name}: no API key configured")
        what = f"{self._name} create"
        body = build_create_body(request)
        if self._settings.model:
            body["model"] = self._settings.model
        response = await send(
            self._http,
            "POST",
            f"{self._base_url}/predictions",
            phase=Phase.SUBMIT,
            what=what,
            deadlines=self._deadlines,
            headers=self._auth(),
            json=body,
        )
        raw = parse_json(response, what, Phase.SUBMIT)
        try:
            job = parse_job(raw, what)
        except ProtocolViolation as exc:
            raise OutcomeUnknown(exc.message) from exc  # a 2xx may still be a paid job
        return Submitted(upstream_id=job.upstream_id)

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        what = f"{self._name} get"
        response = await send(
            self._http,
            "GET",
            self._job_url(ref.upstream_id),
            phase=Phase.POLL,
            what=what,
            deadlines=self._deadlines,
            headers=self._auth(),
        )
        return to_state(parse_job(parse_json(response, what, Phase.POLL), what))

    async def cancel(self, ref: UpstreamRef) -> None:
        # The answer's shape is unknown and not needed: the next poll reports the outcome.
        await send(
            self._http,
            "DELETE",
            self._job_url(ref.upstream_id),
            phase=Phase.CANCEL,
            what=f"{self._name} cancel",
            deadlines=self._deadlines,
            headers=self._auth(),
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        """core.today documents no webhook signature: every callback is an unverified hint."""
        try:
            return webhook_hint(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            raise WebhookRefused(f"{self._name} webhook: body is not JSON") from exc
        except ProtocolViolation as exc:
            raise WebhookRefused(exc.message) from exc

    def _job_url(self, upstream_id: str) -> str:
        return f"{self._base_url}/predictions/{quote(upstream_id, safe='')}"

    def _auth(self) -> dict[str, str]:
        key = self._settings.api_key
        return {} if key is None else {"X-API-Key": key.get_secret_value()}
