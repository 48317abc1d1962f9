"""The state every HTTP upstream adapter carries, so each adapter keeps only its own wire format.

An adapter is configured the same way whatever the upstream: a name, its ``ProviderSettings``
and the one shared ``httpx.AsyncClient``. From those come the base URL (the upstream's own
default unless the settings override it), the connect/read/total deadlines and the poll timing
(the upstream's defaults, overridden field by field by the settings). What differs per upstream
(paths, bodies, answer parsing, auth header) stays in its own package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from app.config import ConfigError, ProviderSettings
from app.providers.base import Capabilities, PollTiming
from app.providers.http import DEFAULT_MAX_ANSWER_BYTES, Deadlines, Phase, send


@dataclass(frozen=True, slots=True)
class UpstreamProfile:
    """What one upstream is like when an instance's settings say nothing else."""

    default_base_url: str
    capabilities: Capabilities
    poll_timing: PollTiming


class HttpAdapter:
    """Base of the adapters that talk to an upstream over HTTP (everything but the simulator)."""

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        http: httpx.AsyncClient,
        profile: UpstreamProfile,
        *,
        headers: Mapping[str, str],
    ) -> None:
        self._name = name
        self._settings = settings
        self._http = http
        self._base_url = (settings.base_url or profile.default_base_url).rstrip("/")
        self._deadlines = Deadlines(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            total=settings.total_timeout_s,
        )
        self._capabilities = profile.capabilities
        self._timing = poll_timing_from(settings, profile.poll_timing)
        # Sent with every call, and only ever to ``_base_url``: the key goes nowhere else.
        self._headers = dict(headers)

    @property
    def name(self) -> str:
        return self._name

    def capabilities(self, model: str) -> Capabilities:
        return self._capabilities  # one model (FLUX.2 [dev]) per configured instance

    def poll_timing(self) -> PollTiming:
        return self._timing

    async def _request(
        self,
        method: str,
        url: str,
        *,
        phase: Phase,
        what: str,
        json: object = None,
        max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> httpx.Response:
        """One call under this instance's deadlines and headers (``send`` classifies failures)."""
        return await send(
            self._http,
            method,
            url,
            phase=phase,
            what=what,
            deadlines=self._deadlines,
            headers=self._headers,
            json=json,
            max_bytes=max_bytes,
        )


def poll_timing_from(settings: ProviderSettings, defaults: PollTiming) -> PollTiming:
    """The upstream's timing with the operator's first poll and cap, where they set them."""
    first, cap = settings.first_poll_after_s, settings.poll_cap_s
    return dataclasses.replace(
        defaults,
        first_poll_after=defaults.first_poll_after if first is None else first,
        cap=defaults.cap if cap is None else cap,
    )


def require_api_key(settings: ProviderSettings, problem: str) -> str:
    """The API key of an upstream that cannot run without one; ``ConfigError`` at start-up else."""
    if settings.api_key is None:
        raise ConfigError(problem)
    return settings.api_key.get_secret_value()


def bearer_headers(api_key: str, user_agent: str) -> dict[str, str]:
    """Bearer auth with a named client: some upstreams' CDNs refuse an empty User-Agent."""
    return {
        "authorization": f"Bearer {api_key}",
        "user-agent": user_agent,
        "accept": "application/json",
    }
