"""Safe egress wired through admission (webhook URLs, input images) and delivery.

The policy itself (every forbidden range, pinning, caps, deadlines, leaks) is tested in
tests/kit/test_egress.py; here the same table must come back as a 422 naming the field, and a
delivery must go only to checked addresses, give up on slow or oversized answers and record why.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Gateway
from tests.delivery.conftest import FakeResolver, use_resolver
from tests.delivery.helpers import settled
from tests.delivery.receiver import Answer, Receiver
from tests.helpers import body, new_key

# reliability.md item 11: every one of these must be refused.
FORBIDDEN = [
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "fd00:ec2::254",
    "100.64.0.1",
    "::ffff:127.0.0.1",
    "64:ff9b::a00:1",
    "2002:a00:1::1",
]


def literal(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.fixture
async def resolver(gateway: Gateway) -> AsyncIterator[FakeResolver]:
    """The shared gateway's egress, answering names from a table for this test only."""
    fake = FakeResolver()
    old = use_resolver(gateway, fake)
    yield fake
    await gateway.runtime.egress.aclose()
    gateway.runtime.egress = old


def refused_field(response: Any) -> list[Any]:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_input"
    return [e["loc"] for e in problem["errors"]]


@pytest.mark.parametrize("address", FORBIDDEN)
async def test_webhook_resolving_to_a_forbidden_address_is_refused(
    gateway: Gateway, resolver: FakeResolver, address: str
) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    resolver.table["hooks.example.test"] = [address]
    by_name = await client.create({**body(), "webhook": "https://hooks.example.test/h?t=secret"})
    assert refused_field(by_name) == [["webhook"]]
    assert "secret" not in by_name.text  # the reason never echoes the query
    by_literal = await client.create({**body(), "webhook": f"https://{literal(address)}/h"})
    assert refused_field(by_literal) == [["webhook"]]


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://hooks.example.test/",
        "https://user:pw@hooks.example.test/h",
        "https://hooks.example.test:8443/h",
        "http://hooks.example.test/h",  # http is refused unless the operator allows it
    ],
)
async def test_webhook_scheme_userinfo_and_port_are_refused(
    gateway: Gateway, resolver: FakeResolver, url: str
) -> None:
    resolver.table["hooks.example.test"] = ["93.184.215.14"]
    client = gateway.client(await new_key(gateway.runtime))
    assert refused_field(await client.create({**body(), "webhook": url})) == [["webhook"]]


async def test_public_and_unresolvable_webhook_hosts_are_accepted(
    gateway: Gateway, resolver: FakeResolver
) -> None:
    client = gateway.client(await new_key(gateway.runtime))
    resolver.table["hooks.example.test"] = ["93.184.215.14", "2606:2800:21f:cb07::1"]
    for url in ("https://hooks.example.test/h", "https://nxdomain.example.test/h"):
        created = await client.create({**body(), "webhook": url})
        assert created.status_code == 202, created.text


async def test_operator_allowlist_admits_internal_hosts_only(
    hooks: Gateway, receiver: Receiver
) -> None:
    """``hooks`` allowlists 127.0.0.1/32 only: an internal name there passes, 10/8 does not."""
    fake = FakeResolver({"internal.test": ["127.0.0.1"], "other.test": ["10.1.2.3"]})
    old = use_resolver(hooks, fake)
    try:
        client = hooks.client(await new_key(hooks.runtime))
        ok = await client.create({**body(), "webhook": receiver.url("/internal", "internal.test")})
        assert ok.status_code == 202, ok.text
        refused = await client.create({**body(), "webhook": receiver.url("/x", "other.test")})
        assert refused_field(refused) == [["webhook"]]
        [received] = await receiver.wait_for("/internal", 1)
        assert received.headers["Host"] == f"internal.test:{receiver.port}"
    finally:
        await hooks.runtime.egress.aclose()
        hooks.runtime.egress = old


class Rebinding:
    """For its host, the allowed address and a forbidden one in turn (a DNS-rebinding attacker)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.calls = 0

    async def resolve(self, host: str, port: int) -> list[str]:
        if host != self.host:  # deliveries of other tests' jobs
            raise OSError(f"fake NXDOMAIN for {host}")
        self.calls += 1
        return ["127.0.0.1" if self.calls % 2 else "10.0.0.1"]


async def test_delivery_checks_every_try_and_connects_only_to_the_checked_address(
    hooks: Gateway, receiver: Receiver
) -> None:
    rebinding = Rebinding("rebind.test")
    old = use_resolver(hooks, rebinding)  # type: ignore[arg-type]
    hook = f"/rebind/{uuid.uuid4().hex[:8]}"
    try:
        client = hooks.client(await new_key(hooks.runtime))
        url = receiver.url(hook, "rebind.test")
        job_id = (await client.create({**body(), "webhook": url})).json()["job_id"]  # lookup 1
        [row] = await settled(hooks.runtime, job_id)
    finally:
        await hooks.runtime.egress.aclose()
        hooks.runtime.egress = old
    history = row.history or []
    assert row.state == "delivered"
    assert "forbidden address 10.0.0.1" in (history[0]["error"] or "")  # lookup 2: refused
    assert history[0]["status"] is None and history[1]["status"] == 200  # lookup 3: delivered
    [received] = receiver.at(hook)  # the refused try never connected anywhere
    assert received.headers["Host"] == f"rebind.test:{receiver.port}"


async def test_slow_and_oversized_answers_are_cut_off_and_retried(
    hooks: Gateway, receiver: Receiver
) -> None:
    timeout = hooks.runtime.settings.webhook_timeout_s
    cap = hooks.runtime.settings.webhook_max_response_bytes
    hook = f"/slow/{uuid.uuid4().hex[:8]}"
    receiver.script(
        hook,
        [
            Answer(200, body=b"x" * 100, drip=timeout / 4),  # one byte at a time: too slow
            Answer(200, body=b"x" * (cap + 1)),  # over the response cap
        ],
    )
    client = hooks.client(await new_key(hooks.runtime))
    job_id = (await client.create({**body(), "webhook": receiver.url(hook)})).json()["job_id"]
    [row] = await settled(hooks.runtime, job_id, timeout=20)
    errors = [h["error"] or "" for h in row.history or []]
    assert row.state == "delivered" and len(errors) == 3
    assert errors[0].startswith("EgressTimeout")
    assert errors[1].startswith("EgressBodyTooLarge")
    assert errors[2] == ""
    assert row.history is not None and row.history[0]["ms"] < (timeout + 1) * 1000


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_match_input_image_fetches_the_image_through_egress(
    hooks: Gateway, receiver: Receiver
) -> None:
    """An http(s) input image is measured at admission via the egress client (allowlisted
    loopback here); a forbidden one is a 422 naming the field, an unreachable one keeps 1:1."""
    client = hooks.client(await new_key(hooks.runtime))
    image = Answer(200, body=png(600, 400), headers={"Content-Type": "image/png"})
    receiver.script("/ref.png", [image])
    created = await client.create(
        body(aspect_ratio="match_input_image", input_images=[receiver.url("/ref.png")])
    )
    assert created.status_code == 202, created.text
    assert (created.json()["input"]["width"], created.json()["input"]["height"]) == (1248, 832)
    [fetched] = receiver.at("/ref.png")
    assert fetched.headers["Range"].startswith("bytes=0-")
    refused = await client.create(
        body(aspect_ratio="match_input_image", input_images=["http://10.0.0.7/ref.png"])
    )
    assert refused_field(refused) == [["input", "input_images", 0]]
    receiver.script("/missing.png", [Answer(404)])
    gone = await client.create(
        body(aspect_ratio="match_input_image", input_images=[receiver.url("/missing.png")])
    )
    assert gone.status_code == 202
    assert (gone.json()["input"]["width"], gone.json()["input"]["height"]) == (1024, 1024)
