"""The estimate is for this exact request (reference images included); the actual cost is what
was produced. Both are on every job."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from tests.conftest import Backend
from tests.helpers import new_key
from tests.routing.priced import PRICES, priced_gateway, run_jobs, small_job

# cheap bills references too here: $0.010 per input megapixel, at least 1 MP each.
EDIT_PRICES = PRICES | {
    "cheap": PRICES["cheap"] | {"input_usd_per_mp": "0.010", "min_input_mp": 1},
}


def png_data_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_edit_costs_count_the_references_and_the_images_produced(
    backend: Backend, tmp_path: Path
) -> None:
    async for rig in priced_gateway(backend, tmp_path, prices=EDIT_PRICES):
        client = rig.gateway.client(await new_key(rig.gateway.runtime))
        # Two references of 1 MP and 2 MP (measured from the data URLs), two outputs of 1 MP.
        edit = small_job(
            "recolour the car",
            input_images=[png_data_url(1024, 1024), png_data_url(1024, 2048)],
            num_outputs=2,
        )
        forced, chosen = await run_jobs(
            client, [edit | {"routing": {"providers": [rig.names["cheap"]]}}, edit]
        )
        # On cheap: 2 x $0.010 for the outputs + (1 + 2) MP x $0.010 for the references.
        assert forced["status"] == "completed", forced
        assert len(forced["result"]["images"]) == 2
        assert forced["cost"] == {
            "estimated_usd": "0.050000",
            "actual_usd": "0.050000",
            "currency": "USD",
        }
        # Left to the planner, this request is cheapest at the fixed price.
        assert chosen["status"] == "completed", chosen
        assert rig.role(chosen["provider"]) == "next"
        assert chosen["cost"]["estimated_usd"] == chosen["cost"]["actual_usd"] == "0.015000"
