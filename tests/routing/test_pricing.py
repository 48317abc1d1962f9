"""Every price kind against hand-computed figures, and the cost of what was actually produced."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from app.routing.catalog import Catalog, load_catalog
from app.routing.pricing import actual_cost, estimate, input_megapixels, produced_cost
from tests.routing.test_planner import BASE, LORA

MODEL = "black-forest-labs/flux-2-dev"
SHIPPED = load_catalog()


def _price(provider: str) -> object:
    offering = SHIPPED.offering(MODEL, provider)
    assert offering is not None
    return offering.price


def data_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("width", "height", "outputs", "inputs", "loras", "usd"),
    [
        (1024, 1024, 1, (), 0, "0.012"),  # exactly 1 MP
        (1536, 1024, 1, (), 0, "0.024"),  # 1.5 MP billed as 2
        (1024, 1024, 1, (1.0, 1.0), 0, "0.036"),  # edit with two 1 MP references
        (1024, 1024, 1, (0.25,), 0, "0.024"),  # a small reference still counts 1 MP
        (1024, 1024, 1, (2.5,), 0, "0.048"),  # a 2.5 MP reference counts 3
        (512, 512, 1, (), 0, "0.012"),  # below 1 MP is still 1
        (2048, 2048, 1, (), 0, "0.048"),  # 4 MP
        (1024, 1024, 3, (), 0, "0.036"),  # per output image
        (1024, 1024, 1, (), 2, "0.021"),  # /lora rate
    ],
)
def test_fal_per_megapixel(
    width: int, height: int, outputs: int, inputs: tuple[float, ...], loras: int, usd: str
) -> None:
    micros = estimate(
        SHIPPED,
        _price("fal"),  # type: ignore[arg-type]
        width=width,
        height=height,
        num_outputs=outputs,
        input_megapixels=inputs,
        loras=loras,
    )
    assert micros == int(Decimal(usd) * 1_000_000)


@pytest.mark.parametrize(
    ("width", "height", "usd"),
    [(1024, 1024, "0.01"), (1536, 1024, "0.015"), (512, 512, "0.0025"), (2048, 1024, "0.02")],
)
def test_deepinfra_formula(width: int, height: int, usd: str) -> None:
    micros = estimate(SHIPPED, _price("deepinfra"), width=width, height=height, num_outputs=1)  # type: ignore[arg-type]
    assert micros == int(Decimal(usd) * 1_000_000)


def test_fixed_credits_convert_through_the_configured_rate(tmp_path: Path) -> None:
    # Shipped: the credit's USD value is unknown, so core.today is unpriced, never guessed.
    assert estimate(SHIPPED, _price("coretoday"), width=1024, height=1024, num_outputs=1) is None  # type: ignore[arg-type]
    override = tmp_path / "catalog.yaml"
    override.write_text("currencies:\n  coretoday_credit: '0.0004'\n")
    catalog = load_catalog(override)
    offering = catalog.offering(MODEL, "coretoday")
    assert offering is not None
    # 25 credits x $0.0004 = $0.01 per request, whatever the size or image count.
    for width, count in ((1024, 1), (2048, 1), (1024, 4)):
        price = offering.price
        assert estimate(catalog, price, width=width, height=1024, num_outputs=count) == 10_000


def test_fixed_usd_per_request_and_per_image() -> None:
    catalog = Catalog.model_validate(
        {
            "models": {
                MODEL: {
                    "providers": {
                        "a": {"model": "a", "price": {"kind": "fixed", "usd": "0.003"}},
                        "b": {
                            "model": "b",
                            "price": {"kind": "fixed", "usd": "0.003", "per_image": True},
                        },
                    }
                }
            }
        }
    )
    a, b = (catalog.offering(MODEL, n) for n in "ab")
    assert a is not None and b is not None
    assert estimate(catalog, a.price, width=1024, height=1024, num_outputs=4) == 3_000
    assert estimate(catalog, b.price, width=1024, height=1024, num_outputs=4) == 12_000


def test_unknown_prices_stay_unknown() -> None:
    for provider in ("replicate", "novita", "together"):
        assert estimate(SHIPPED, _price(provider), width=1024, height=1024, num_outputs=1) is None  # type: ignore[arg-type]


def test_simulator_price_is_configurable() -> None:
    catalog = load_catalog(simulator_price=Decimal("0.005"))
    offering = catalog.offering(MODEL, "simulator")
    assert offering is not None
    assert estimate(catalog, offering.price, width=1024, height=1024, num_outputs=2) == 10_000


@pytest.mark.parametrize(
    "price",
    [
        {"kind": "fixed"},  # neither usd nor credits
        {"kind": "fixed", "usd": "0.01", "credits": 3, "credit": "x"},  # both
        {"kind": "fixed", "credits": 3, "credit": "undeclared"},
        {"kind": "per_megapixel"},
        {"kind": "per_pixel", "usd": "0.01"},
    ],
)
def test_malformed_prices_are_refused_at_load(price: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Catalog.model_validate(
            {
                "currencies": {"x": "0.1"},
                "models": {MODEL: {"providers": {"p": {"model": "p", "price": price}}}},
            }
        )


def test_input_megapixels_measure_data_urls_and_count_remote_images_as_one() -> None:
    sizes = input_megapixels(
        [data_url(2048, 1024), "https://example.com/ref.jpg", data_url(64, 64)]
    )
    assert sizes == (2.0, 1.0, 64 * 64 / (1024 * 1024))


def test_produced_cost_prices_each_stored_image() -> None:
    price = _price("fal")
    # Asked for 2 at 1024x1024, got one 1024x1024 and one 1536x1024: 1 MP + 2 MP.
    outputs = [(1024, 1024), (1536, 1024)]
    assert produced_cost(SHIPPED, price, outputs=outputs) == 36_000  # type: ignore[arg-type]


def test_actual_cost_prefers_the_upstreams_figure_then_what_was_produced() -> None:
    request = replace(BASE, input_images=(data_url(1024, 1024), data_url(1024, 2048)))
    common = {"estimate": 99_999}
    produced = [(1024, 1024)]
    # Upstream-reported cost wins.
    assert actual_cost(SHIPPED, MODEL, "fal", request, produced, reported=7, **common) == 7
    # Else: $0.012 for the output + $0.012 x (1 + 2) MP of references.
    assert actual_cost(SHIPPED, MODEL, "fal", request, produced, reported=None, **common) == 48_000
    # Loras switch fal to its /lora rate.
    with_lora = replace(BASE, loras=(LORA,))
    assert (
        actual_cost(SHIPPED, MODEL, "fal", with_lora, produced, reported=None, **common) == 21_000
    )
    # Unpriced stays unpriced; a route the catalog no longer lists keeps its estimate.
    assert actual_cost(SHIPPED, MODEL, "novita", request, produced, reported=None, **common) is None
    assert actual_cost(SHIPPED, MODEL, "gone", request, produced, reported=None, **common) == 99_999
