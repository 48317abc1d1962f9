"""The OpenAI-style upstreams this adapter speaks to, as data: one `Dialect` each.

An instance's dialect is found from clues in its configuration (`detect`): the instance name, the
base URL, then the spelling of the model id. Adding an upstream is adding a row here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.config import ConfigError
from app.providers.base import Capabilities, UpstreamRequest
from app.providers.openai_images import mapping


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    default_base_url: str
    default_model: str
    capabilities: Capabilities
    build_body: Callable[[UpstreamRequest, str], mapping.RequestBody]
    sends_seed: bool  # whether our seed reaches the upstream (and so describes the result)


TOGETHER = Dialect(
    name="together",
    default_base_url="https://api.together.xyz/v1",
    default_model="black-forest-labs/FLUX.2-dev",
    capabilities=Capabilities(
        # Together documents `reference_images` as a list for FLUX.2 [dev] but no maximum, and
        # `loras` without a count for this model: one of each until a larger number is verified.
        max_input_images=1,
        max_loras=1,
        min_side=256,
        max_side=1440,  # no published range for FLUX.2 [dev]; Replicate's 1440 as a safe bound
        formats=frozenset(mapping.TOGETHER_OUTPUT_FORMATS),
        max_outputs=4,
        cancel=False,
        webhooks=False,
    ),
    build_body=mapping.together_body,
    sends_seed=True,
)

DEEPINFRA = Dialect(
    name="deepinfra",
    default_base_url="https://api.deepinfra.com/v1/openai",
    default_model="black-forest-labs/FLUX-2-dev",
    capabilities=Capabilities(
        max_input_images=0,
        max_loras=0,
        min_side=256,
        max_side=1440,  # unknown for DeepInfra; the same conservative bound as Together
        # No format parameter; DeepInfra's documented example answer is base64 JPEG ("/9j/...").
        formats=frozenset({"jpg"}),
        max_outputs=1,  # `n` exists but its limit and billing are undocumented
        cancel=False,
        webhooks=False,
    ),
    build_body=mapping.deepinfra_body,
    sends_seed=False,
)

DIALECTS: Mapping[str, Dialect] = {dialect.name: dialect for dialect in (TOGETHER, DEEPINFRA)}

# (clue, dialect): a clue found (case-insensitively) in the instance name, base URL or model id.
# Together spells the model "FLUX.2-dev", DeepInfra "FLUX-2-dev".
CLUES: tuple[tuple[str, Dialect], ...] = (
    ("together", TOGETHER),
    ("deepinfra", DEEPINFRA),
    ("flux.2-dev", TOGETHER),
    ("flux-2-dev", DEEPINFRA),
)


def detect(name: str, base_url: str | None, model: str | None) -> Dialect:
    """The dialect of one configured instance; `ConfigError` when nothing gives it away."""
    for source in (name, base_url or "", model or ""):
        lowered = source.lower()
        for clue, dialect in CLUES:
            if clue in lowered:
                return dialect
    raise ConfigError(
        f"providers.{name}: cannot tell which OpenAI-style upstream this is; name the instance "
        f"after one of {sorted(DIALECTS)} or set its base_url or model"
    )
