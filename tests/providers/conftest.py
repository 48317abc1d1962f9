"""Fixtures for the upstream scenarios: a gateway wired to one emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Backend, Gateway, start_gateway
from tests.emulators.support import Knobs
from tests.providers.upstreams import Upstream

Wire = Callable[..., AsyncIterator[tuple[Gateway, Any]]]


@pytest.fixture
def wire(backend: Backend, tmp_path: Path) -> Wire:
    """``async for gateway, emulator in wire(upstream, knobs, **provider_settings)``."""

    async def start(upstream: Upstream, knobs: Knobs, **settings: Any) -> AsyncIterator[Any]:
        emulator = upstream.make()
        emulator.reset(knobs)
        with upstream.serve(emulator) as url:
            providers = {upstream.name: upstream.settings(emulator, url, **settings)}
            async for gateway in start_gateway(
                backend,
                tmp_path,
                providers=providers,
                simulator={"enabled": False},
                submit_unknown_grace_s=0.3,
            ):
                yield gateway, emulator

    return start
