"""``RateLimitHeaders``: adds ``RateLimit`` and ``RateLimit-Policy`` to rate-limited answers.

The limit is decided in the ``authenticate`` dependency, but most endpoints return a ready
``Response`` whose headers a dependency cannot touch; so the decision is left in the request's
state and this plain ASGI middleware writes it into the response head. A 429 carries its own
headers (``RateLimited``) and is left alone.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.dependencies import LIMITED_METHODS, RATE_LIMIT_STATE
from app.auth.ratelimit import Decision


class RateLimitHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in LIMITED_METHODS:
            await self.app(scope, receive, send)  # reads are never limited: nothing to add
            return
        # Shared with ``request.state`` even if a layer below copies the scope dict itself.
        state = scope.setdefault("state", {})

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = state.get(RATE_LIMIT_STATE)
                if isinstance(decision, Decision):
                    existing = {name.lower() for name, _ in message.get("headers", [])}
                    extra = [
                        (name.lower().encode(), value.encode())
                        for name, value in decision.headers().items()
                        if name.lower().encode() not in existing
                    ]
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_limits)
