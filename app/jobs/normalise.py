"""Cross-field input rules and the normalised input that is stored, echoed and sent upstream."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from app.errors import invalid
from app.jobs.schemas import ImageInput, data_url_bytes, image_size_of
from app.jobs.sizes import ASPECT_SIZES, MAX_SIDE, MIN_SIDE, round_to_step, size_matching
from app.providers.base import Lora, OutputFormat

_HTTP_URL = re.compile(r"^https?://[^\s/?#]+")


@dataclass(frozen=True, slots=True)
class NormalisedInput:
    prompt: str
    input_images: tuple[str, ...]
    aspect_ratio: str
    width: int
    height: int
    seed: int | None
    output_format: OutputFormat
    output_quality: int
    go_fast: bool
    disable_safety_checker: bool
    num_outputs: int
    loras: tuple[Lora, ...]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["input_images"] = list(self.input_images)
        data["loras"] = [asdict(lora) for lora in self.loras]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NormalisedInput:
        raw = dict(data)
        raw["input_images"] = tuple(raw.get("input_images") or ())
        raw["loras"] = tuple(Lora(**lora) for lora in raw.get("loras") or ())
        return cls(**raw)

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


def normalise(raw: ImageInput) -> NormalisedInput:
    """Apply `api.md`'s input rules; raise a 422 naming the offending field."""
    images = tuple(raw.input_images)
    for index, url in enumerate(images):
        _check_image_url(url, index)
    aspect = raw.aspect_ratio or ("custom" if raw.width or raw.height else "1:1")
    if aspect == "custom":
        width, height = _custom_side(raw.width, "width"), _custom_side(raw.height, "height")
    elif aspect == "match_input_image":
        if not images:
            raise invalid(["input", "aspect_ratio"], "match_input_image needs input_images")
        width, height = _matching_size(images[0])
    else:
        width, height = ASPECT_SIZES[aspect]
    output_format: OutputFormat = "jpg" if raw.output_format == "jpeg" else raw.output_format
    return NormalisedInput(
        prompt=raw.prompt,
        input_images=images,
        aspect_ratio=aspect,
        width=width,
        height=height,
        seed=None if raw.seed in (None, -1) else raw.seed,
        output_format=output_format,
        output_quality=raw.output_quality,
        go_fast=raw.go_fast,
        disable_safety_checker=raw.disable_safety_checker,
        num_outputs=raw.num_outputs,
        loras=tuple(Lora(path=lora.path, scale=lora.scale) for lora in raw.loras),
    )


def _check_image_url(url: str, index: int) -> None:
    loc: list[str | int] = ["input", "input_images", index]
    if url.startswith("data:"):
        try:
            data_url_bytes(url)
        except ValueError as exc:
            raise invalid(loc, str(exc)) from None
    elif not _HTTP_URL.match(url) or len(url) > 4096:
        raise invalid(loc, "must be an http(s) URL or a data: URL of jpeg, png, gif or webp")


def _custom_side(value: int | None, name: str) -> int:
    if value is None:
        raise invalid(["input", name], "is required when aspect_ratio is custom")
    rounded = round_to_step(value)
    if not MIN_SIDE <= rounded <= MAX_SIDE:
        raise invalid(
            ["input", name], f"must be within {MIN_SIDE}..{MAX_SIDE} after rounding to 32"
        )
    return rounded


def _matching_size(url: str) -> tuple[int, int]:
    if url.startswith("data:"):
        try:
            return size_matching(*image_size_of(data_url_bytes(url)))
        except ValueError as exc:
            raise invalid(["input", "input_images", 0], str(exc)) from None
    return ASPECT_SIZES["1:1"]
