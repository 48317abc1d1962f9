"""Dashboard sign-in over HTTP: the session cookie, CSRF on both forms, and every way a session
ends (logout, a revoked or demoted key, a forged or expired cookie)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import update

from app.dashboard.session import SessionSigner
from app.kit.timeutil import utcnow
from app.models import ApiKey
from app.setup import ADMIN_SCOPES
from tests.conftest import Gateway
from tests.helpers import new_key

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@asynccontextmanager
async def browser_like(gateway: Gateway, scheme: str = "http") -> AsyncIterator[httpx.AsyncClient]:
    """A client with its own cookie jar, speaking to the shared gateway in-process."""
    transport = gateway.http._transport  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://gateway.test") as c:
        yield c


async def login_form(client: httpx.AsyncClient) -> str:
    page = await client.get("/dashboard/login")
    assert page.status_code == 200
    match = _CSRF.search(page.text)
    assert match is not None
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    csrf = await login_form(client)
    return await client.post("/dashboard/login", data={"csrf": csrf, "api_key": key})


def cookie_header(response: httpx.Response, name: str) -> str:
    headers = [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    return headers[0].lower()


async def test_sign_in_sets_a_strict_session_cookie_and_sign_out_needs_its_token(
    gateway: Gateway,
) -> None:
    admin = await new_key(gateway.runtime, scopes=ADMIN_SCOPES)
    async with browser_like(gateway) as client:
        first = await client.get("/dashboard")
        assert first.status_code == 303 and first.headers["location"] == "/dashboard/login"
        form = await client.get("/dashboard/login")
        assert form.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in form.headers["content-security-policy"]
        assert form.headers["x-frame-options"] == "DENY"
        nonce = cookie_header(form, "ig_dashboard_login")
        assert "httponly" in nonce and "samesite=strict" in nonce and "path=/dashboard" in nonce

        signed_in = await sign_in(client, admin)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"
        session = cookie_header(signed_in, "ig_dashboard")
        assert "httponly" in session and "samesite=strict" in session
        assert "path=/dashboard" in session and "secure" not in session
        assert "max-age=28800" in session or "max-age=2879" in session
        assert admin.lower() not in session

        page = await client.get("/dashboard")
        assert page.status_code == 200 and "Spend per day" in page.text
        assert admin not in page.text

        # A logout without the form's token (what a forged cross-site post would be) is ignored.
        forged = await client.post("/dashboard/logout", data={"csrf": "0" * 64})
        assert forged.headers["location"] == "/dashboard"
        assert (await client.get("/dashboard")).status_code == 200

        token = _CSRF.search(page.text)
        assert token is not None
        out = await client.post("/dashboard/logout", data={"csrf": token.group(1)})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
        assert "max-age=0" in cookie_header(out, "ig_dashboard")
        assert (await client.get("/dashboard")).status_code == 303


async def test_sign_in_refuses_a_missing_token_a_plain_key_and_garbage(gateway: Gateway) -> None:
    admin = await new_key(gateway.runtime, scopes=ADMIN_SCOPES)
    plain = await new_key(gateway.runtime)  # images and usage scopes, no admin
    async with browser_like(gateway) as client:
        no_nonce = await client.post("/dashboard/login", data={"csrf": "a" * 64, "api_key": admin})
        assert no_nonce.status_code == 403
        assert "ig_dashboard=" not in " ".join(no_nonce.headers.get_list("set-cookie"))

        stale = await login_form(client)
        await login_form(client)  # a new form: the old token no longer matches the cookie
        replayed = await client.post("/dashboard/login", data={"csrf": stale, "api_key": admin})
        assert replayed.status_code == 403

        for key in (plain, "ig_" + "x" * 49, ""):
            refused = await sign_in(client, key)
            assert refused.status_code == 401
            assert "admin scope" in refused.text
            assert "ig_dashboard=" not in " ".join(refused.headers.get_list("set-cookie"))
            if key:
                assert key not in refused.text

        as_json = await client.post("/dashboard/login", json={"api_key": admin})
        assert as_json.status_code == 422
        assert as_json.json()["errors"][0]["loc"] == ["header", "Content-Type"]


async def test_a_session_ends_with_its_key_and_cannot_be_forged(gateway: Gateway) -> None:
    admin = await new_key(gateway.runtime, scopes=ADMIN_SCOPES)
    principal = await gateway.runtime.keys.verify(admin)
    assert principal is not None
    async with browser_like(gateway) as client:
        assert (await sign_in(client, admin)).status_code == 303
        assert (await client.get("/dashboard?days=7")).status_code == 200

        bad_days = await client.get("/dashboard?days=0")
        assert bad_days.status_code == 422
        assert bad_days.json()["errors"][0]["loc"] == ["query", "days"]

        real = client.cookies["ig_dashboard"]
        client.cookies.set("ig_dashboard", real[:-1] + ("0" if real[-1] != "0" else "1"))
        assert (await client.get("/dashboard")).status_code == 303  # forged signature
        client.cookies.set("ig_dashboard", real)
        assert (await client.get("/dashboard")).status_code == 200

        async with gateway.runtime.sessions() as session:  # demoted: no admin scope any more
            await session.execute(
                update(ApiKey).where(ApiKey.id == principal.key_id).values(scopes=["images:read"])
            )
            await session.commit()
        assert (await client.get("/dashboard")).status_code == 303
        async with gateway.runtime.sessions() as session:  # restored, then revoked
            await session.execute(
                update(ApiKey).where(ApiKey.id == principal.key_id).values(scopes=ADMIN_SCOPES)
            )
            await session.commit()
        client.cookies.set("ig_dashboard", real)
        assert (await client.get("/dashboard")).status_code == 200
        async with gateway.runtime.sessions() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == principal.key_id).values(revoked_at=utcnow())
            )
            await session.commit()
        gone = await client.get("/dashboard")
        assert gone.status_code == 303
        assert "max-age=0" in cookie_header(gone, "ig_dashboard")  # the dead cookie is cleared


def test_session_tokens_expire_and_bind_to_the_secret() -> None:
    signer = SessionSigner(b"s" * 40)
    session = signer.issue("key_abc", 60)
    assert signer.read(session.token) == session
    assert signer.read(session.token, now=session.expires_at) is None
    assert SessionSigner(b"t" * 40).read(session.token) is None
    assert signer.read("key_abc.9999999999.nonce.sig") is None
    assert signer.read("") is None and signer.read("a.b") is None
    assert signer.check_csrf("logout", session.token, signer.csrf_for("logout", session.token))
    assert not signer.check_csrf("login", session.token, signer.csrf_for("logout", session.token))


async def test_cookies_are_secure_over_https(gateway: Gateway) -> None:
    admin = await new_key(gateway.runtime, scopes=ADMIN_SCOPES)
    async with browser_like(gateway, scheme="https") as client:
        form = await client.get("/dashboard/login")
        assert "secure" in cookie_header(form, "ig_dashboard_login")
        signed_in = await sign_in(client, admin)
        assert "secure" in cookie_header(signed_in, "ig_dashboard")


async def test_static_files_are_the_packaged_ones_and_cacheable(gateway: Gateway) -> None:
    css = await gateway.http.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "immutable" in css.headers["cache-control"]
    again = await gateway.http.get(
        "/dashboard/static/dashboard.css", headers={"If-None-Match": css.headers["etag"]}
    )
    assert again.status_code == 304
    assert (await gateway.http.get("/dashboard/static/nope.js")).status_code == 404
    assert (await gateway.http.get("/dashboard/static/..%2Fendpoints.py")).status_code == 404
    paths = (await gateway.http.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/dashboard")]
