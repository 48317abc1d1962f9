"""The Novita provider: submit a FLUX.2 [dev] task, poll its result, read its (unsigned) webhooks.

Novita has no cancel and no list endpoint, so this provider is not `Cancellable` and a submit whose
answer was lost can only be reconciled by a webhook hint. The API key goes only to ``base_url``.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from pydantic import ValidationError

from app.config import ConfigError, ProviderSettings
from app.providers.base import (
    Capabilities,
    OutcomeUnknown,
    PollTiming,
    Submitted,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
    WebhookUpdate,
)
from app.providers.http import Deadlines, Phase, parse_json, send
from app.providers.novita import mapping

DEFAULT_BASE_URL = "https://api.novita.ai"
DEFAULT_MODEL = "flux-2-dev"  # the path segment of `/v3/async/<model>`
USER_AGENT = "imagegate/0.1 (+novita)"

CAPABILITIES = Capabilities(
    max_input_images=3,
    max_loras=3,
    min_side=256,
    max_side=1536,
    formats=mapping.OUTPUT_FORMATS,
    max_outputs=1,  # no count field: one image per task
    cancel=False,
    webhooks=True,
)

# Typical FLUX.2 [dev] runs take several seconds; no published queue figures (unknown).
DEFAULT_POLL_TIMING = PollTiming(first_poll_after=3.0, backoff=1.5, cap=10.0)


class NovitaProvider:
    """Novita AI's async V3 API for FLUX.2 [dev]."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if settings.api_key is None:
            raise ConfigError(f"providers.{name}.api_key is not set")
        self._name = name
        self._http = http
        self._base_url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        # The catalog's model id names the model for our routing; the submit path is Novita's own
        # slug, so it comes from this instance's settings (never from the request).
        self._submit_url = f"{self._base_url}/v3/async/{settings.model or DEFAULT_MODEL}"
        self._result_url = f"{self._base_url}/v3/async/task-result"
        self._headers = {
            "authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "user-agent": USER_AGENT,
            "accept": "application/json",
        }
        self._deadlines = Deadlines(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            total=settings.total_timeout_s,
        )
        self._timing = PollTiming(
            first_poll_after=_or(settings.first_poll_after_s, DEFAULT_POLL_TIMING.first_poll_after),
            backoff=DEFAULT_POLL_TIMING.backoff,
            cap=_or(settings.poll_cap_s, DEFAULT_POLL_TIMING.cap),
            min_interval=DEFAULT_POLL_TIMING.min_interval,
        )

    @property
    def name(self) -> str:
        return self._name

    def capabilities(self, model: str) -> Capabilities:
        return CAPABILITIES  # one model (FLUX.2 [dev]) per Novita endpoint

    def poll_timing(self) -> PollTiming:
        return self._timing

    async def submit(self, request: UpstreamRequest) -> Submitted:
        body = mapping.to_submit_body(request)
        what = f"{self._name} submit"
        response = await send(
            self._http,
            "POST",
            self._submit_url,
            phase=Phase.SUBMIT,
            what=what,
            deadlines=self._deadlines,
            headers=self._headers,
            json=body,
        )
        data = parse_json(response, what, Phase.SUBMIT)
        try:
            task_id = mapping.parse_submit_answer(data)
        except ValidationError as exc:
            # A 200 without a task id: Novita may well have accepted (and billed) the task.
            raise OutcomeUnknown(f"{what}: answer has no task_id ({str(data)[:120]})") from exc
        return Submitted(upstream_id=task_id)

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        what = f"{self._name} task-result"
        url = str(httpx.URL(self._result_url, params={"task_id": ref.upstream_id}))
        response = await send(
            self._http,
            "GET",
            url,
            phase=Phase.POLL,
            what=what,
            deadlines=self._deadlines,
            headers=self._headers,
        )
        return mapping.to_state(mapping.parse_task_result(parse_json(response, what, Phase.POLL)))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        return mapping.parse_webhook_body(body)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def create(name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> NovitaProvider:
    return NovitaProvider(name, settings, http)
