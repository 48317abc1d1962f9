"""Cost in micro-dollars: the estimate for one exact request, and the cost of what was produced.

``None`` means unpriced: a price no source gives is never guessed. Megapixels are counted as
upstreams bill them, 1 MP = 1024 x 1024 pixels, rounded up to whole ones per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from app.jobs.normalise import NormalisedInput
from app.jobs.schemas import data_url_bytes, image_size_of
from app.kit.money import usd_to_micros
from app.routing.catalog import Catalog, FixedPrice, FormulaPrice, PerMegapixelPrice, Price

MEGAPIXEL = 1024 * 1024
UNKNOWN_INPUT_MP = 1.0  # an input image we cannot measure counts as the usual 1 MP minimum


def whole_megapixels(width: int, height: int) -> int:
    """Megapixels rounded up to whole ones, as per-megapixel upstreams bill."""
    return max(1, math.ceil(width * height / MEGAPIXEL))


def input_megapixels(images: Sequence[str]) -> tuple[float, ...]:
    """Each input image's size: measured for ``data:`` URLs, else counted as 1 MP.

    Remote images are not fetched at admission (that would cost a download per request).
    """
    sizes = []
    for url in images:
        megapixels = UNKNOWN_INPUT_MP
        if url.startswith("data:"):
            try:
                width, height = image_size_of(data_url_bytes(url))
                megapixels = width * height / MEGAPIXEL
            except ValueError:
                pass  # admission already refused unreadable data URLs
        sizes.append(megapixels)
    return tuple(sizes)


def estimate(
    catalog: Catalog,
    price: Price | None,
    *,
    width: int,
    height: int,
    num_outputs: int,
    input_megapixels: tuple[float, ...] = (),
    loras: int = 0,
) -> int | None:
    """The cost of one request producing ``num_outputs`` images of ``width`` x ``height``."""
    return produced_cost(
        catalog,
        price,
        outputs=[(width, height)] * num_outputs,
        input_megapixels=input_megapixels,
        loras=loras,
    )


def produced_cost(
    catalog: Catalog,
    price: Price | None,
    *,
    outputs: Sequence[tuple[int, int]],
    input_megapixels: tuple[float, ...] = (),
    loras: int = 0,
) -> int | None:
    """The cost of a job that produced ``outputs`` (width, height each)."""
    if price is None:
        return None
    if isinstance(price, FixedPrice):
        usd = _fixed_usd(catalog, price)
        if usd is None:
            return None
        return usd_to_micros(usd * (len(outputs) if price.per_image else 1))
    if isinstance(price, PerMegapixelPrice):
        rate = price.lora_usd_per_mp if loras and price.lora_usd_per_mp else price.usd_per_mp
        total = sum((rate * whole_megapixels(w, h) for w, h in outputs), Decimal(0))
        if price.input_usd_per_mp is not None:
            for megapixels in input_megapixels:
                counted = max(Decimal(math.ceil(megapixels)), price.min_input_mp)
                total += price.input_usd_per_mp * counted
        return usd_to_micros(total)
    assert isinstance(price, FormulaPrice)
    steps = Decimal(price.steps) / price.base_steps
    total = sum(
        (
            price.usd * Decimal(w) / price.base_width * Decimal(h) / price.base_height * steps
            for w, h in outputs
        ),
        Decimal(0),
    )
    return usd_to_micros(total)


def _fixed_usd(catalog: Catalog, price: FixedPrice) -> Decimal | None:
    if price.usd is not None:
        return price.usd
    if price.credits is None or price.credit is None:
        return None
    rate = catalog.currencies.get(price.credit)
    return None if rate is None else price.credits * rate


def actual_cost(
    catalog: Catalog,
    model_id: str,
    provider: str,
    request: NormalisedInput,
    outputs: Sequence[tuple[int, int]],
    *,
    reported: int | None,
    estimate: int | None,
) -> int | None:
    """What a finished job cost: the upstream's own figure when it reports one, else the price
    of what was actually produced (``outputs``: each stored image's width and height)."""
    if reported is not None:
        return reported
    offering = catalog.offering(model_id, provider)
    if offering is None:  # the operator's catalog no longer lists this route
        return estimate
    return produced_cost(
        catalog,
        offering.price,
        outputs=outputs,
        input_megapixels=input_megapixels(request.input_images),
        loras=len(request.loras),
    )
