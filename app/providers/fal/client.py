"""The fal.ai queue adapter's I/O: submit, poll (status, then result), cancel, webhook hints.

Every call goes through ``app.providers.http.send`` (deadlines and failure classification). fal's
submit answer carries the status/response/cancel URLs and clients must use them, so they travel in
``Submitted.handle``; the adapter builds a URL itself only when the handle lacks one (a job adopted
without its handle). Returned URLs on another origin than the configured base are ignored, so the
API key is never sent anywhere but to the configured fal queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import httpx

from app.config import ConfigError, ProviderSettings
from app.providers.base import (
    Capabilities,
    PollTiming,
    Submitted,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
    WebhookUpdate,
)
from app.providers.fal.mapping import (
    CAPABILITIES,
    app_id,
    build_input,
    endpoint_id,
    parse_cancel,
    parse_result,
    parse_status,
    parse_submit,
    same_origin,
    state_from_result,
    state_from_status,
    submitted,
    webhook_update,
)
from app.providers.http import Deadlines, Phase, parse_json, send

DEFAULT_BASE_URL = "https://queue.fal.run"
# fal's queue usually starts a FLUX.2 [dev] job within a couple of seconds and finishes in a few.
FIRST_POLL_AFTER_S = 2.0
POLL_CAP_S = 8.0


class FalProvider:
    """fal.ai's queue API for FLUX.2 [dev]: text-to-image, edit and lora on one provider."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if settings.api_key is None:
            raise ConfigError(f"provider {name!r} (fal) needs an api_key")
        self._name = name
        self._settings = settings
        self._http = http
        self._base_url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._auth = {"Authorization": f"Key {settings.api_key.get_secret_value()}"}
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
            backoff=1.5,
            cap=POLL_CAP_S if cap is None else cap,
        )

    async def submit(self, request: UpstreamRequest) -> Submitted:
        what = f"{self._name} submit"
        url = f"{self._base_url}/{endpoint_id(request, self._model(request))}"
        if request.webhook_url:
            url += "?" + urlencode({"fal_webhook": request.webhook_url})
        response = await send(
            self._http,
            "POST",
            url,
            phase=Phase.SUBMIT,
            what=what,
            deadlines=self._deadlines,
            headers=self._auth,
            json=build_input(request),
        )
        return submitted(parse_submit(parse_json(response, what, Phase.SUBMIT)), self._base_url)

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        what = f"{self._name} status"
        response = await self._call("GET", self._url(ref, "status_url", "/status"), what)
        status = parse_status(parse_json(response, what, Phase.POLL))
        state = state_from_status(status)
        if state is not None:
            return state
        what = f"{self._name} result"
        result_url = self._url(ref, "response_url", "", fallback=status.response_url)
        response = await self._call("GET", result_url, what)
        result = parse_result(parse_json(response, what, Phase.POLL))
        return state_from_result(result, safety_checker_on=not ref.request.disable_safety_checker)

    async def cancel(self, ref: UpstreamRef) -> None:
        """Ask fal to cancel; the next poll tells whether it stopped (a running job may finish)."""
        what = f"{self._name} cancel"
        url = self._url(ref, "cancel_url", "/cancel")
        response = await self._call("PUT", url, what, phase=Phase.CANCEL)
        parse_cancel(parse_json(response, what, Phase.CANCEL))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        return webhook_update(body)

    async def _call(
        self, method: str, url: str, what: str, *, phase: Phase = Phase.POLL
    ) -> httpx.Response:
        return await send(
            self._http,
            method,
            url,
            phase=phase,
            what=what,
            deadlines=self._deadlines,
            headers=self._auth,
        )

    def _model(self, request: UpstreamRequest) -> str:
        return self._settings.model or request.model

    def _url(self, ref: UpstreamRef, key: str, suffix: str, *, fallback: str | None = None) -> str:
        """The URL fal returned for this job, else the documented app-level path."""
        for candidate in (ref.handle.get(key), fallback):
            if candidate and same_origin(candidate, self._base_url):
                return candidate
        app = app_id(self._model(ref.request))
        return f"{self._base_url}/{app}/requests/{ref.upstream_id}{suffix}"


def create(name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> FalProvider:
    return FalProvider(name, settings, http)
