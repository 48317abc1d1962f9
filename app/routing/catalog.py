"""The model catalog: models, aliases, and per provider the upstream model id and price."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

SHIPPED = Path(__file__).with_name("catalog.yaml")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedPrice(_Frozen):
    kind: Literal["fixed"]
    usd: Decimal | None = None
    credits: Decimal | None = None
    credit: str | None = None
    per_image: bool = False

    @model_validator(mode="after")
    def _one_amount(self) -> FixedPrice:
        if (self.usd is None) == (self.credits is None or self.credit is None):
            raise ValueError("a fixed price needs either usd, or credits and credit")
        return self


class PerMegapixelPrice(_Frozen):
    kind: Literal["per_megapixel"]
    usd_per_mp: Decimal
    input_usd_per_mp: Decimal | None = None
    min_input_mp: Decimal = Decimal(0)
    lora_usd_per_mp: Decimal | None = None  # the output rate when the request carries loras


class FormulaPrice(_Frozen):
    kind: Literal["formula"]
    usd: Decimal
    base_width: int = 1024
    base_height: int = 1024
    base_steps: int = 28
    steps: int = 28


Price = Annotated[FixedPrice | PerMegapixelPrice | FormulaPrice, Field(discriminator="kind")]


class Offering(_Frozen):
    """One provider serving one model."""

    model: str
    price: Price | None = None


class ModelEntry(_Frozen):
    aliases: tuple[str, ...] = ()
    providers: dict[str, Offering] = Field(default_factory=dict)


class Catalog(_Frozen):
    currencies: dict[str, Decimal | None] = Field(default_factory=dict)
    models: dict[str, ModelEntry] = Field(default_factory=dict)

    @cached_property
    def _names(self) -> dict[str, str]:
        names = {model_id: model_id for model_id in self.models}
        for model_id, entry in self.models.items():
            names.update(dict.fromkeys(entry.aliases, model_id))
        return names

    def resolve(self, name: str) -> str | None:
        """Catalog id for an id or alias; ``None`` when unknown."""
        return self._names.get(name)

    def known(self) -> list[str]:
        return sorted(self._names)

    def offering(self, model_id: str, provider: str) -> Offering | None:
        entry = self.models.get(model_id)
        return None if entry is None else entry.providers.get(provider)

    @model_validator(mode="after")
    def _credits_are_known(self) -> Catalog:
        for model_id, entry in self.models.items():
            for name, offering in entry.providers.items():
                price = offering.price
                credit = price.credit if isinstance(price, FixedPrice) else None
                if credit is not None and credit not in self.currencies:
                    raise ValueError(
                        f"{model_id} / {name}: unknown currency {credit!r}; "
                        "declare it under currencies"
                    )
        return self


def _merge(base: dict[str, object], extra: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def load_catalog(override: Path | None = None, simulator_price: Decimal | None = None) -> Catalog:
    data = yaml.safe_load(SHIPPED.read_text())
    if override is not None:
        data = _merge(data, yaml.safe_load(override.read_text()) or {})
    if simulator_price is not None:
        for entry in data.get("models", {}).values():
            sim = entry.get("providers", {}).get("simulator")
            if sim and sim.get("price"):
                sim["price"]["usd"] = str(simulator_price)
    return Catalog.model_validate(data)
