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

from app.config import ProviderSettings
from app.providers.adapter import HttpAdapter, UpstreamProfile, require_api_key
from app.providers.base import (
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
from app.providers.http import Phase, parse_json

DEFAULT_BASE_URL = "https://queue.fal.run"
# fal's queue usually starts a FLUX.2 [dev] job within a couple of seconds and finishes in a few.
DEFAULT_POLL_TIMING = PollTiming(first_poll_after=2.0, backoff=1.5, cap=8.0)
PROFILE = UpstreamProfile(DEFAULT_BASE_URL, CAPABILITIES, DEFAULT_POLL_TIMING)


class FalProvider(HttpAdapter):
    """fal.ai's queue API for FLUX.2 [dev]: text-to-image, edit and lora on one provider."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        key = require_api_key(settings, f"provider {name!r} (fal) needs an api_key")
        super().__init__(name, settings, http, PROFILE, headers={"Authorization": f"Key {key}"})

    async def submit(self, request: UpstreamRequest) -> Submitted:
        what = f"{self._name} submit"
        url = f"{self._base_url}/{endpoint_id(request, self._model(request))}"
        if request.webhook_url:
            url += "?" + urlencode({"fal_webhook": request.webhook_url})
        response = await self._request(
            "POST", url, phase=Phase.SUBMIT, what=what, json=build_input(request)
        )
        return submitted(parse_submit(parse_json(response, what, Phase.SUBMIT)), self._base_url)

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        what = f"{self._name} status"
        status_url = self._url(ref, "status_url", "/status")
        response = await self._request("GET", status_url, phase=Phase.POLL, what=what)
        status = parse_status(parse_json(response, what, Phase.POLL))
        state = state_from_status(status)
        if state is not None:
            return state
        what = f"{self._name} result"
        result_url = self._url(ref, "response_url", "", fallback=status.response_url)
        response = await self._request("GET", result_url, phase=Phase.POLL, what=what)
        result = parse_result(parse_json(response, what, Phase.POLL))
        return state_from_result(result, safety_checker_on=not ref.request.disable_safety_checker)

    async def cancel(self, ref: UpstreamRef) -> None:
        """Ask fal to cancel; the next poll tells whether it stopped (a running job may finish)."""
        what = f"{self._name} cancel"
        url = self._url(ref, "cancel_url", "/cancel")
        response = await self._request("PUT", url, phase=Phase.CANCEL, what=what)
        parse_cancel(parse_json(response, what, Phase.CANCEL))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        return webhook_update(body)

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
