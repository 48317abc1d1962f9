"""The Novita provider: submit a FLUX.2 [dev] task, poll its result, read its (unsigned) webhooks.

Novita has no cancel and no list endpoint, so this provider is not `Cancellable` and a submit whose
answer was lost can only be reconciled by a webhook hint. The API key goes only to ``base_url``.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from pydantic import ValidationError

from app.config import ProviderSettings
from app.providers.adapter import HttpAdapter, UpstreamProfile, bearer_headers, require_api_key
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
from app.providers.http import Phase, parse_json
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
PROFILE = UpstreamProfile(DEFAULT_BASE_URL, CAPABILITIES, DEFAULT_POLL_TIMING)


class NovitaProvider(HttpAdapter):
    """Novita AI's async V3 API for FLUX.2 [dev]."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        key = require_api_key(settings, f"providers.{name}.api_key is not set")
        super().__init__(name, settings, http, PROFILE, headers=bearer_headers(key, USER_AGENT))
        # The catalog's model id names the model for our routing; the submit path is Novita's own
        # slug, so it comes from this instance's settings (never from the request).
        self._submit_url = f"{self._base_url}/v3/async/{settings.model or DEFAULT_MODEL}"
        self._result_url = f"{self._base_url}/v3/async/task-result"

    async def submit(self, request: UpstreamRequest) -> Submitted:
        body = mapping.to_submit_body(request)
        what = f"{self._name} submit"
        response = await self._request(
            "POST", self._submit_url, phase=Phase.SUBMIT, what=what, json=body
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
        response = await self._request("GET", url, phase=Phase.POLL, what=what)
        return mapping.to_state(mapping.parse_task_result(parse_json(response, what, Phase.POLL)))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        return mapping.parse_webhook_body(body)


def create(name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> NovitaProvider:
    return NovitaProvider(name, settings, http)
