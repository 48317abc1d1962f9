"""``/dashboard``: the cost and health page, its login and logout, and its static files.

HTML pages, not API operations, so they stay out of the OpenAPI document. Signing in takes an
API key with the ``admin`` scope once and answers with a session cookie (``session.py``); the
key itself is never kept by the browser.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.dashboard.render import ASSETS, page
from app.dashboard.service import build_dashboard, viewer_for
from app.dashboard.session import (
    LOGIN_COOKIE,
    LOGIN_NONCE_TTL_S,
    SESSION_COOKIE,
    SessionSigner,
    clear_cookie,
    is_https,
    new_login_nonce,
    set_cookie,
)
from app.errors import NotFound, invalid
from app.runtime import Runtime
from app.web.deps import RuntimeDep

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/dashboard", include_in_schema=False)

MAX_FORM_BYTES = 4096
DEFAULT_DAYS = 30


def _signer(runtime: Runtime) -> SessionSigner:
    return SessionSigner(runtime.settings.signing_key)


def _secure(request: Request, runtime: Runtime) -> bool:
    return is_https(request, runtime.settings.public_base_url)


@router.get("")
async def dashboard(
    request: Request,
    runtime: RuntimeDep,
    days: Annotated[int, Query(ge=1, le=366, description="period in days")] = DEFAULT_DAYS,
) -> Response:
    """The dashboard for a signed-in admin; anyone else is sent to the login form."""
    session = _signer(runtime).read(request.cookies.get(SESSION_COOKIE))
    viewer = None
    if session is not None:
        async with runtime.sessions() as db:
            viewer = await viewer_for(db, session.key_id)
    if session is not None and viewer is not None:
        data = await build_dashboard(runtime, viewer, days)
        csrf = _signer(runtime).csrf_for("logout", session.token)
        return page("dashboard.html", d=data, csrf=csrf, periods=(7, 30, 90))
    response = RedirectResponse("/dashboard/login", status_code=303)
    if SESSION_COOKIE in request.cookies:
        clear_cookie(response, SESSION_COOKIE, secure=_secure(request, runtime))
    return response


@router.get("/login")
async def login_form(request: Request, runtime: RuntimeDep) -> Response:
    """The sign-in form (or the dashboard, when already signed in)."""
    if _signer(runtime).read(request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse("/dashboard", status_code=303)
    return _login_page(request, runtime)


@router.post("/login")
async def login(request: Request, runtime: RuntimeDep) -> Response:
    """Check an admin key once; answer with a session cookie."""
    form = await _form(request)
    signer = _signer(runtime)
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not signer.check_csrf("login", nonce, form.get("csrf")):
        return _login_page(
            request, runtime, "This sign-in form has expired. Please try again.", status_code=403
        )
    key = form.get("api_key", "").strip()
    principal = await runtime.keys.verify(key) if key else None
    if principal is None or "admin" not in principal.scopes:
        log.warning(
            "dashboard sign-in refused", reason="not an admin key" if principal else "bad key"
        )
        return _login_page(
            request, runtime, "That is not a valid API key with the admin scope.", status_code=401
        )
    session = signer.issue(principal.key_id, runtime.settings.dashboard_session_ttl_s)
    log.info("dashboard sign-in", key_id=principal.key_id)
    secure = _secure(request, runtime)
    response = RedirectResponse("/dashboard", status_code=303)
    max_age = max(1, session.expires_at - int(time.time()))
    set_cookie(response, SESSION_COOKIE, session.token, max_age=max_age, secure=secure)
    clear_cookie(response, LOGIN_COOKIE, secure=secure)
    return response


@router.post("/logout")
async def logout(request: Request, runtime: RuntimeDep) -> Response:
    """End the session (the form's CSRF token must match it)."""
    form = await _form(request)
    signer = _signer(runtime)
    session = signer.read(request.cookies.get(SESSION_COOKIE))
    if session is not None and not signer.check_csrf("logout", session.token, form.get("csrf")):
        return RedirectResponse("/dashboard", status_code=303)  # a forged logout changes nothing
    response = RedirectResponse("/dashboard/login", status_code=303)
    clear_cookie(response, SESSION_COOKIE, secure=_secure(request, runtime))
    return response


@router.get("/static/{name}")
async def static(name: str, request: Request) -> Response:
    """The dashboard's own stylesheet and script (content-hashed, cacheable for good)."""
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFound(f"no dashboard file {name!r}")
    headers = {
        "ETag": f'"{asset.etag}"',
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == f'"{asset.etag}"':
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _login_page(
    request: Request, runtime: Runtime, error: str | None = None, *, status_code: int = 200
) -> Response:
    nonce = new_login_nonce()
    response = page(
        "login.html",
        status_code=status_code,
        csrf=_signer(runtime).csrf_for("login", nonce),
        error=error,
    )
    set_cookie(
        response, LOGIN_COOKIE, nonce, max_age=LOGIN_NONCE_TTL_S, secure=_secure(request, runtime)
    )
    return response


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, small and flat (first value per name)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise invalid(["header", "Content-Type"], "must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise invalid(["body"], f"a form of at most {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid(["body"], "not a valid form") from exc
    return {name: values[0] for name, values in fields.items() if values}
