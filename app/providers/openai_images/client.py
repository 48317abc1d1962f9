"""The synchronous OpenAI-style provider: one ``POST {base_url}/images/generations`` per job.

The answer *is* the result, so `submit` returns `Submitted` with a finished `state` and `poll` has
nothing to ask: it raises `ProtocolViolation` (a synchronous attempt is never polled; one that lost
its answer cannot be recovered from this upstream, there is no id to look up).
"""

from __future__ import annotations

import dataclasses
import uuid

import httpx

from app.config import ProviderSettings
from app.providers.adapter import HttpAdapter, UpstreamProfile, bearer_headers, require_api_key
from app.providers.base import (
    NotAccepted,
    PollTiming,
    ProtocolViolation,
    Rejected,
    Submitted,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
)
from app.providers.http import Phase, parse_json
from app.providers.openai_images import mapping
from app.providers.openai_images.dialects import Dialect, detect

USER_AGENT = "imagegate/0.1 (+openai_images)"  # Together's CDN refuses an empty User-Agent
DEFAULT_FIRST_POLL = PollTiming().first_poll_after
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # base64 answers carry the images themselves


class OpenAIImagesProvider(HttpAdapter):
    """Together AI, DeepInfra, ...: whichever `Dialect` this instance's settings point at."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        key = require_api_key(settings, f"providers.{name}.api_key is not set")
        dialect = detect(name, settings.base_url, settings.model)
        profile = UpstreamProfile(dialect.default_base_url, dialect.capabilities, PollTiming())
        # The whole generation happens inside one call: operators of slow instances raise
        # read/total timeouts in the settings rather than here.
        super().__init__(name, settings, http, profile, headers=bearer_headers(key, USER_AGENT))
        self.dialect: Dialect = dialect
        self._url = f"{self._base_url}/images/generations"
        self._model = settings.model or self.dialect.default_model
        if settings.first_poll_after_s == 0:
            # A synchronous job is never polled, and here a first poll of 0 has always meant the
            # default (the polled adapters take it literally): kept as it was.
            self._timing = dataclasses.replace(self._timing, first_poll_after=DEFAULT_FIRST_POLL)

    async def submit(self, request: UpstreamRequest) -> Submitted:
        what = f"{self._name} images/generations"
        if request.output_format not in self.dialect.capabilities.formats:
            raise NotAccepted(f"{what}: cannot produce {request.output_format}")
        body = self.dialect.build_body(request, self._model)
        try:
            response = await self._request(
                "POST",
                self._url,
                phase=Phase.SUBMIT,
                what=what,
                json=body,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except Rejected as exc:
            if mapping.refusal_code(exc.message) is None:
                raise
            # The safety checker refused: the job ran and failed `moderated` (no failover).
            return Submitted(upstream_id=_local_id(), state=mapping.moderated_state(exc.message))
        answer = mapping.parse_answer(parse_json(response, what, Phase.SUBMIT))
        seed = request.seed if self.dialect.sends_seed else None
        state = mapping.to_state(answer, request, seed)
        return Submitted(upstream_id=answer.id or _local_id(), state=state)

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        raise ProtocolViolation(
            f"{self._name}: synchronous upstream, the result came with the submit; "
            f"nothing to poll for {ref.upstream_id}"
        )


def _local_id() -> str:
    """An id for answers that carry none (DeepInfra): ours, marked as such."""
    return f"local-{uuid.uuid4().hex}"


def create(name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> OpenAIImagesProvider:
    return OpenAIImagesProvider(name, settings, http)
