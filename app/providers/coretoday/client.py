"""The core.today adapter's I/O: create, get and cancel (``DELETE``) predictions; webhook hints."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import httpx
import orjson

from app.config import ProviderSettings
from app.providers.adapter import HttpAdapter, UpstreamProfile
from app.providers.base import (
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
from app.providers.http import Phase, parse_json
from app.providers.replicate.client import CAPABILITIES as REPLICATE_CAPABILITIES

# core.today runs the same Replicate model, so it can do what Replicate can. Its webhooks are
# unsigned: they only prompt a poll.
CAPABILITIES = REPLICATE_CAPABILITIES
# Replicate's timing (p50 ~5.8 s) plus a proxy hop whose overhead is unknown: look a little
# later than for Replicate itself, same cap.
DEFAULT_POLL_TIMING = PollTiming(first_poll_after=3.5, cap=10.0)
# The base includes the API version (https://api.core.today/v1); paths are relative to it.
PROFILE = UpstreamProfile(DEFAULT_BASE_URL, CAPABILITIES, DEFAULT_POLL_TIMING)


class CoreTodayProvider(HttpAdapter):
    """FLUX.2 [dev] through core.today (``black-forest-labs/flux-2-dev``, 25 credits a run)."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        # No key is no error at start-up: submit refuses (NotAccepted), so routing moves on.
        key = settings.api_key
        auth = {} if key is None else {"X-API-Key": key.get_secret_value()}
        super().__init__(name, settings, http, PROFILE, headers=auth)

    async def submit(self, request: UpstreamRequest) -> Submitted:
        if self._settings.api_key is None:
            raise NotAccepted(f"{self._name}: no API key configured")
        what = f"{self._name} create"
        body = build_create_body(request)
        if self._settings.model:
            body["model"] = self._settings.model
        response = await self._request(
            "POST",
            f"{self._base_url}/predictions",
            phase=Phase.SUBMIT,
            what=what,
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
        response = await self._request(
            "GET",
            self._job_url(ref.upstream_id),
            phase=Phase.POLL,
            what=what,
        )
        return to_state(parse_job(parse_json(response, what, Phase.POLL), what))

    async def cancel(self, ref: UpstreamRef) -> None:
        # The answer's shape is unknown and not needed: the next poll reports the outcome.
        await self._request(
            "DELETE",
            self._job_url(ref.upstream_id),
            phase=Phase.CANCEL,
            what=f"{self._name} cancel",
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
