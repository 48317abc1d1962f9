"""Inbound Replicate webhooks: Standard Webhooks signature check, then the prediction's state.

Replicate signs ``"{webhook-id}.{webhook-timestamp}.{body}"`` with HMAC-SHA256 under the key
behind ``whsec_...`` (``GET /v1/webhooks/default/secret``). A verified body is the prediction and
is trusted as its state; anything that does not verify is refused, never downgraded to a hint.
"""

from __future__ import annotations

from collections.abc import Mapping

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

from app.providers.base import ProtocolViolation, WebhookRefused, WebhookUpdate
from app.providers.replicate.mapping import parse_prediction, to_state


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
    """Verify and parse one delivery; raise ``WebhookRefused`` for anything untrustworthy.

    The library refuses missing headers, a bad signature and timestamps more than five minutes
    away from now. A retry of the same event keeps its ``webhook-id``, which becomes ``event_id``
    so the gateway can drop replays.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        payload = Webhook(secret).verify(body, lowered)
    except WebhookVerificationError as exc:
        raise WebhookRefused(f"replicate webhook: {exc}") from exc
    except (ValueError, EmptyWebhookSecretError) as exc:  # bad encoding, signature or secret
        raise WebhookRefused(f"replicate webhook: unreadable ({type(exc).__name__})") from exc
    try:
        prediction = parse_prediction(payload, "replicate webhook")
        state = to_state(prediction)
    except ProtocolViolation as exc:
        raise WebhookRefused(exc.message) from exc
    return WebhookUpdate(
        upstream_id=prediction.id,
        verified=True,
        state=state,
        event_id=lowered["webhook-id"],
    )
