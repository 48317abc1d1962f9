"""The planner, table-driven: capability filters, routing options, each strategy and tie-break."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest

from app.jobs.normalise import NormalisedInput
from app.jobs.schemas import Routing
from app.providers.base import Capabilities, Lora, PollTiming, Submitted, UpstreamState
from app.routing.catalog import Catalog
from app.routing.planner import HEALTH_REASON, plan_route

MODEL = "black-forest-labs/flux-2-dev"

CATALOG = Catalog.model_validate(
    {
        "models": {
            MODEL: {
                "aliases": ["flux-2-dev"],
                "providers": {
                    "cheap": {
                        "model": "c/flux",
                        "price": {"kind": "per_megapixel", "usd_per_mp": "0.010"},
                    },
                    "twin": {
                        "model": "t/flux",
                        "price": {"kind": "per_megapixel", "usd_per_mp": "0.010"},
                    },
                    "mid": {"model": "m/flux", "price": {"kind": "fixed", "usd": "0.015"}},
                    "dear": {"model": "d/flux", "price": {"kind": "formula", "usd": "0.02"}},
                    "unpriced": {"model": "u/flux", "price": None},
                    "absent": {"model": "a/flux", "price": {"kind": "fixed", "usd": "0.001"}},
                },
            }
        }
    }
)

NARROW = Capabilities(max_input_images=4, max_loras=0, max_side=1440, max_outputs=4)
CAPS = {
    "cheap": NARROW,
    "twin": NARROW,
    "mid": Capabilities(max_input_images=4, max_loras=3, max_side=2048, max_outputs=4),
    "dear": Capabilities(max_loras=1, max_side=2048, formats=frozenset({"jpg", "webp"})),
    "unpriced": Capabilities(max_input_images=8, max_loras=3, max_side=2048, max_outputs=4),
}


@dataclass
class FakeProvider:
    name: str
    caps: Capabilities

    def capabilities(self, model: str) -> Capabilities:
        return self.caps

    def poll_timing(self) -> PollTiming:
        return PollTiming()

    async def submit(self, request: Any) -> Submitted:
        raise NotImplementedError

    async def poll(self, ref: Any) -> UpstreamState:
        raise NotImplementedError


PROVIDERS = {name: FakeProvider(name, caps) for name, caps in CAPS.items()}  # "absent": unset

BASE = NormalisedInput(
    prompt="a red fox",
    input_images=(),
    aspect_ratio="1:1",
    width=1024,
    height=1024,
    seed=None,
    output_format="webp",
    output_quality=80,
    go_fast=True,
    disable_safety_checker=False,
    num_outputs=1,
    loras=(),
)
LORA = Lora("https://example.com/style.safetensors", 0.8)


@dataclass
class Case:
    id: str
    expected: list[str]
    request: dict[str, Any] = field(default_factory=dict)
    routing: dict[str, Any] = field(default_factory=dict)
    p50: dict[str, float] = field(default_factory=dict)
    success: dict[str, float] = field(default_factory=dict)
    open: frozenset[str] = frozenset()
    excluded: dict[str, str] = field(default_factory=dict)  # a subset of the plan's reasons


CASES = [
    Case(
        "cheapest_by_estimate_unpriced_last",
        ["cheap", "twin", "mid", "dear", "unpriced"],
        excluded={"absent": "not configured"},
    ),
    Case(
        "five_input_images",
        ["unpriced"],
        request={"input_images": tuple(f"https://example.com/{i}.png" for i in range(5))},
        excluded={
            "cheap": "takes at most 4 input images",
            "mid": "takes at most 4 input images",
            "dear": "takes at most 0 input images",
        },
    ),
    Case(
        "loras",
        ["mid", "unpriced"],
        request={"loras": (LORA, LORA)},
        excluded={"cheap": "does not take loras", "dear": "takes at most 1 loras"},
    ),
    Case(
        "2048_px",
        ["mid", "dear", "unpriced"],  # fixed $0.015 < formula $0.02 x 4
        request={"aspect_ratio": "custom", "width": 2048, "height": 2048},
        excluded={
            "cheap": "sizes must be within 256..1440",
            "twin": "sizes must be within 256..1440",
        },
    ),
    Case(
        "png",
        ["cheap", "twin", "mid", "unpriced"],
        request={"output_format": "png"},
        excluded={"dear": "cannot produce png"},
    ),
    Case(
        "num_outputs",
        ["mid", "cheap", "twin", "unpriced"],  # two images: 2 x $0.010 beats a fixed $0.015
        request={"num_outputs": 2},
        excluded={"dear": "produces at most 1 images per job"},
    ),
    Case(
        "exclude",
        ["twin", "mid", "dear", "unpriced"],
        routing={"exclude": ["cheap"]},
        excluded={"cheap": "in routing.exclude"},
    ),
    Case(
        "providers_allowlist",
        ["mid", "dear"],
        routing={"providers": ["dear", "mid", "nowhere"]},
        excluded={
            "cheap": "not in routing.providers",
            "unpriced": "not in routing.providers",
            "nowhere": "does not serve this model",
        },
    ),
    Case(
        "max_cost",
        ["cheap", "twin", "mid"],
        routing={"max_cost_usd": Decimal("0.015")},
        excluded={"dear": "above routing.max_cost_usd", "unpriced": "unpriced"},
    ),
    Case(
        "cheapest_tie_by_position",
        ["cheap", "twin", "mid", "dear", "unpriced"],
    ),
    Case(
        "cheapest_tie_by_p50",
        ["twin", "cheap", "mid", "dear", "unpriced"],
        p50={"cheap": 2.0, "twin": 1.0, "mid": 0.1},
    ),
    Case(
        "cheapest_tie_by_success_rate",
        ["twin", "cheap", "mid", "dear", "unpriced"],
        p50={"cheap": 2.0, "twin": 2.0},
        success={"cheap": 0.80, "twin": 0.95},
    ),
    Case(
        "cheapest_observed_before_unobserved_at_equal_price",
        ["twin", "cheap", "mid", "dear", "unpriced"],
        p50={"twin": 9.0},
    ),
    Case(
        "unpriced_last_even_when_fastest",
        ["cheap", "twin", "mid", "dear", "unpriced"],
        p50={"unpriced": 0.1, "cheap": 9.0, "twin": 9.0},
    ),
    Case(
        "fastest_by_p50_unobserved_last",
        ["mid", "dear", "cheap", "twin", "unpriced"],
        routing={"strategy": "fastest"},
        p50={"cheap": 5.0, "mid": 2.0, "dear": 3.0},
    ),
    Case(
        "fastest_tie_by_success_rate",
        ["dear", "mid", "cheap", "twin", "unpriced"],
        routing={"strategy": "fastest"},
        p50={"mid": 2.0, "dear": 2.0, "cheap": 4.0},
        success={"mid": 0.90, "dear": 0.99},
    ),
    Case(
        "ordered_by_routing_providers",
        ["dear", "cheap", "mid"],
        routing={"strategy": "ordered", "providers": ["dear", "cheap", "mid"]},
        p50={"mid": 0.1},
    ),
    Case(
        "ordered_by_catalog",
        ["cheap", "twin", "mid", "dear", "unpriced"],
        routing={"strategy": "ordered"},
        p50={"unpriced": 0.1},
    ),
    Case(
        "open_breaker_routed_around",
        ["twin", "mid", "dear", "unpriced"],
        open=frozenset({"cheap"}),
        excluded={"cheap": HEALTH_REASON},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    plan = plan_route(
        CATALOG,
        PROVIDERS,
        MODEL,
        replace(BASE, **case.request),
        Routing(**case.routing),
        is_open=lambda name: name in case.open,
        latency_p50=case.p50.get,
        success_rate=case.success.get,
    )
    assert [c.provider for c in plan.candidates] == case.expected
    assert case.excluded.items() <= plan.excluded.items(), plan.excluded
    # Every provider in the catalog is either a candidate or excluded with a reason.
    named = {c.provider for c in plan.candidates} | set(plan.excluded)
    assert named >= set(CATALOG.models[MODEL].providers)


def test_estimates_travel_with_the_candidates() -> None:
    plan = plan_route(
        CATALOG,
        PROVIDERS,
        MODEL,
        replace(BASE, aspect_ratio="custom", width=1280, height=1024),
        Routing(),
    )
    estimates = {c.provider: c.estimate_micros for c in plan.candidates}
    # 1280x1024 is 1.25 MP, billed as 2; the formula scales by 1.25; fixed stays fixed.
    assert estimates == {
        "cheap": 20_000,
        "twin": 20_000,
        "mid": 15_000,
        "dear": 25_000,
        "unpriced": None,
    }
    assert [c.provider for c in plan.candidates] == ["mid", "cheap", "twin", "dear", "unpriced"]


def test_only_open_breakers_left_is_unhealthy_not_impossible() -> None:
    plan = plan_route(
        CATALOG,
        PROVIDERS,
        MODEL,
        BASE,
        Routing(providers=["cheap", "twin"]),
        is_open=lambda name: name in ("cheap", "twin"),
    )
    assert plan.candidates == ()
    assert sorted(plan.unhealthy) == ["cheap", "twin"]


def test_impossible_request_has_no_unhealthy_provider() -> None:
    plan = plan_route(
        CATALOG,
        PROVIDERS,
        MODEL,
        replace(BASE, input_images=tuple(f"https://e.com/{i}" for i in range(9))),
        Routing(),
        is_open=lambda name: name == "cheap",  # would be open, but cannot serve it anyway
    )
    assert plan.candidates == ()
    assert plan.unhealthy == []
    assert plan.excluded["cheap"] == "takes at most 4 input images"
