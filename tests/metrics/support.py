"""Reading ``/metrics`` in tests: parse the exposition and sum the samples matching labels."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Samples:
    rows: tuple[tuple[str, dict[str, str], float], ...]

    def value(self, name: str, **labels: str) -> float:
        """The sum of every sample called ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, have, value in self.rows
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )

    def labelsets(self, name: str, **labels: str) -> list[dict[str, str]]:
        return [
            have
            for sample, have, _ in self.rows
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        ]

    def __sub__(self, before: Samples) -> Delta:
        return Delta(self, before)


@dataclass(frozen=True)
class Delta:
    after: Samples
    before: Samples

    def value(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)


def parse(text: str) -> Samples:
    rows = tuple(
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
    return Samples(rows)


async def scrape(http: httpx.AsyncClient, **headers: str) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)
