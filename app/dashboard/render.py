"""Server-side HTML: the Jinja2 templates, their filters, and the vendored static files.

Everything the page needs ships in this package (no CDN, no web font service): the stylesheet
and a small progressive-enhancement script, served from memory with content-hashed URLs so
browsers may cache them for good, and the icon as a data: URL. Responses carry a strict
Content-Security-Policy: only this origin's styles, scripts and images, and no inline script or
style at all (charts use SVG presentation attributes, which the policy does not govern).
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from app.dashboard import format as fmt

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    assets = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.is_file():
            body = path.read_bytes()
            media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            assets[path.name] = Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])
    return assets


ASSETS = _load_assets()

# The icon travels inside the page (a data: URL the CSP allows), one file fewer to ship.
FAVICON = "data:image/svg+xml," + quote(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="8" fill="#3d55d6"/>'
    '<rect x="7" y="9" width="18" height="14" rx="2.5" fill="none" stroke="#fff" '
    'stroke-width="2.2"/><path d="M9.5 20.5l4.5-5 3.5 3.5 2-2 3 3.5" fill="none" '
    'stroke="#fff" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>'
    '<circle cx="20.5" cy="13" r="1.7" fill="#fff"/></svg>'
)


def static_url(name: str) -> str:
    return f"/dashboard/static/{name}?v={ASSETS[name].etag}"


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a typo in a template fails loudly in tests
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(
    usd=fmt.usd,
    usd_exact=fmt.usd_exact,
    percent=fmt.percent,
    seconds=fmt.seconds,
    number=fmt.number,
    ago=fmt.ago,
    iso=fmt.iso,
)
_env.globals.update(static_url=static_url, favicon=FAVICON)


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
