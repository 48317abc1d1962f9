"""The synchronous OpenAI-style provider: one ``POST {base_url}/images/generations`` per job.

The answer *is* the result, so `submit` returns `Submitted` with a finished `state` and `poll` has
nothing to ask: it raises `ProtocolViolation` (a synchronous attempt is never polled; one that lost
its answer cannot be recovered from this upstream, there is no id to look up).
"""

from __future__ import annotations

import uuid

import httpx

from app.config import ConfigError, ProviderSettings
from app.providers.base import (
    Capabilities,
    NotAccepted,
    PollTiming,
    ProtocolViolation,
    Rejected,
    Submitted,
    UpstreamRef,
    UpstreamRequest,
    UpstreamState,
)
from app.providers.http import Deadlines, Phase, parse_json, send
from app.providers.openai_images import mapping
from app.providers.openai_images.dialects import Dialect, detect

USER_AGENT = "imagegate/0.1 (+openai_images)"  # Together's CDN refuses an empty User-Agent
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # base64 answers carry the images themselves


class OpenAIImagesProvider:
    """Together AI, DeepInfra, ...: whichever `Dialect` this instance's settings point at."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if settings.api_key is None:
            raise ConfigError(f"providers.{name}.api_key is not set")
        self._name = name
        self._http = http
        self.dialect: Dialect = detect(name, settings.base_url, settings.model)
        base_url = (settings.base_url or self.dialect.default_base_url).rstrip("/")
        self._url = f"{base_url}/images/generations"
        self._model = settings.model or self.dialect.default_model
        self._headers = {
            "authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "user-agent": USER_AGENT,
            "accept": "application/json",
        }
        # The whole generation happens inside this one call: operators of slow instances raise
        # read/total timeouts in the settings rather than here.
        self._deadlines = Deadlines(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            total=settings.total_timeout_s,
        )
        defaults = PollTiming()
        self._timing = PollTiming(
            first_poll_after=settings.first_poll_after_s or defaults.first_poll_after,
            cap=settings.poll_cap_s or defaults.cap,
        )

    @property
    def name(self) -> str:
        return self._name

    def capabilities(self, model: str) -> Capabilities:
        return self.dialect.capabilities

    def poll_timing(self) -> PollTiming:
        return self._timing  # the protocol asks for one; a synchronous job is never polled

    async def submit(self, request: UpstreamRequest) -> Submitted:
        what = f"{self._name} images/generations"
        if request.output_format not in self.dialect.capabilities.formats:
            raise NotAccepted(f"{what}: cannot produce {request.output_format}")
        body = self.dialect.build_body(request, self._model)
        try:
            response = await send(
                self._http,
                "POST",
                self._url,
                phase=Phase.SUBMIT,
                what=what,
                deadlines=self._deadlines,
                headers=self._headers,
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
