"""The Replicate adapter's I/O: create, get and cancel predictions, and read signed webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import httpx

from app.config import ProviderSettings
from app.providers.adapter import HttpAdapter, UpstreamProfile
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
from app.providers.http import Phase, parse_json
from app.providers.replicate.mapping import (
    DEFAULT_BASE_URL,
    build_create_body,
    parse_prediction,
    resolve_target,
    to_state,
)
from app.providers.replicate.webhooks import verify_webhook

# flux-2-dev on Replicate: up to 4 reference images, custom sides 256..1440, one output per
# prediction, no loras (providers.md).
CAPABILITIES = Capabilities(
    max_input_images=4,
    max_loras=0,
    min_side=256,
    max_side=1440,
    formats=frozenset({"webp", "jpg", "png"}),
    max_outputs=1,
    cancel=True,
    webhooks=True,
)
# Observed p50 is about 5.8 s end to end: a first look at 3 s catches fast runs without wasting
# calls, and the 10 s cap keeps slow ones (p95 12 s) from waiting long after they finish.
DEFAULT_POLL_TIMING = PollTiming(first_poll_after=3.0, cap=10.0)
PROFILE = UpstreamProfile(DEFAULT_BASE_URL, CAPABILITIES, DEFAULT_POLL_TIMING)


class ReplicateProvider(HttpAdapter):
    """FLUX.2 [dev] on Replicate (``black-forest-labs/flux-2-dev``)."""

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        # No key is no error at start-up: submit refuses (NotAccepted), so routing moves on.
        key = settings.api_key
        auth = {} if key is None else {"Authorization": f"Bearer {key.get_secret_value()}"}
        super().__init__(name, settings, http, PROFILE, headers=auth)
        secret = settings.webhook_secret
        self._webhook_secret = secret.get_secret_value() if secret is not None else None

    async def submit(self, request: UpstreamRequest) -> Submitted:
        if self._settings.api_key is None:
            raise NotAccepted(f"{self._name}: no API key configured")
        target = resolve_target(request.model, self._settings.model)
        what = f"{self._name} create"
        response = await self._request(
            "POST",
            self._base_url + target.path,
            phase=Phase.SUBMIT,
            what=what,
            json=build_create_body(request, target),
        )
        raw = parse_json(response, what, Phase.SUBMIT)
        try:
            prediction = parse_prediction(raw, what)
        except ProtocolViolation as exc:
            # A 2xx we cannot read may still be an accepted (paid) prediction.
            raise OutcomeUnknown(exc.message) from exc
        return Submitted(upstream_id=prediction.id)

    async def poll(self, ref: UpstreamRef) -> UpstreamState:
        what = f"{self._name} get"
        response = await self._request(
            "GET",
            self._prediction_url(ref.upstream_id),
            phase=Phase.POLL,
            what=what,
        )
        prediction = parse_prediction(parse_json(response, what, Phase.POLL), what)
        return to_state(prediction)

    async def cancel(self, ref: UpstreamRef) -> None:
        # The answer is the prediction; a cancel of a finished one changes nothing, so the
        # worker's next poll tells the truth either way.
        await self._request(
            "POST",
            self._prediction_url(ref.upstream_id) + "/cancel",
            phase=Phase.CANCEL,
            what=f"{self._name} cancel",
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        if self._webhook_secret is None:
            raise WebhookRefused(
                f"{self._name}: no webhook secret configured (set webhook_secret or call "
                "load_webhook_secret); refusing to trust an unverifiable webhook"
            )
        return verify_webhook(self._webhook_secret, headers, body)

    async def load_webhook_secret(self) -> None:
        """Fetch the account's signing secret when none is configured (once, at start-up)."""
        if self._webhook_secret is not None:
            return
        what = f"{self._name} webhook secret"
        response = await self._request(
            "GET",
            f"{self._base_url}/v1/webhooks/default/secret",
            phase=Phase.POLL,
            what=what,
        )
        key = parse_json(response, what, Phase.POLL)
        if not isinstance(key, dict) or not str(key.get("key", "")).startswith("whsec_"):
            raise ProtocolViolation(f"{what}: answer has no whsec_ key")
        self._webhook_secret = str(key["key"])

    def _prediction_url(self, upstream_id: str) -> str:
        # Built from our base URL, never from the answer's ``urls``: the token goes nowhere else.
        return f"{self._base_url}/v1/predictions/{quote(upstream_id, safe='')}"
