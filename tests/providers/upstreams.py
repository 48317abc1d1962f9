"""One table of the upstreams under test: how to start each emulator and point imagegate at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.emulators.coretoday import CoreTodayEmulator
from tests.emulators.fal import FalEmulator
from tests.emulators.novita import NovitaEmulator
from tests.emulators.openai_images import OpenAIImagesEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.emulators.support import Calls, FileHost, Knobs, Ledger


class Emulator(Protocol):
    api_key: str
    knobs: Knobs
    ledger: Ledger
    calls: Calls

    def reset(self, knobs: Knobs | None = None) -> None: ...


@dataclass(frozen=True)
class Upstream:
    name: str
    make: Callable[[], Any]
    base_url: Callable[[str], str] = lambda url: url
    kind: str | None = None
    input: dict[str, Any] = field(default_factory=dict)  # what this upstream can produce
    cancels: bool = True

    def serve(self, emulator: Any) -> AbstractContextManager[str]:
        served: AbstractContextManager[str] = emulator.serve()
        return served

    def settings(self, emulator: Any, url: str, **extra: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "api_key": emulator.api_key,
            "base_url": self.base_url(url),
            "first_poll_after_s": 0.05,
            "poll_cap_s": 0.2,
            "total_timeout_s": 5,
            "read_timeout_s": 5,
        }
        if self.kind:
            values["kind"] = self.kind
        if getattr(emulator, "webhook_secret", None):
            values["webhook_secret"] = emulator.webhook_secret
        return values | extra


UPSTREAMS = {
    "replicate": Upstream("replicate", ReplicateEmulator),
    "fal": Upstream("fal", FalEmulator),
    "novita": Upstream("novita", NovitaEmulator, input={"output_format": "png"}, cancels=False),
    "coretoday": Upstream("coretoday", CoreTodayEmulator, base_url=lambda url: f"{url}/v1"),
    "together": Upstream(
        "together",
        lambda: OpenAIImagesEmulator("together"),
        kind="openai_images",
        input={"output_format": "png"},
        cancels=False,
    ),
    "deepinfra": Upstream(
        "deepinfra",
        lambda: OpenAIImagesEmulator("deepinfra"),
        kind="openai_images",
        input={"output_format": "jpg"},
        cancels=False,
    ),
}


def stored_files(emulator: Any) -> Iterator[bytes]:
    files: FileHost | None = getattr(emulator, "files", None)
    if files is not None:
        for stored in files.files.values():
            yield stored.data
