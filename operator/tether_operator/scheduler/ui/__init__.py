"""The run timeline page: static HTML, CSS and JS served at `/ui/`.

The files hold no data. The page reads everything from the HTTP API (`/v1/runs`,
`/v1/workers`) with the caller's bearer token, so what it shows is what the API lets
that caller read; the files themselves are served without a token, as a login page
is (docs/ui.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response

__all__ = ["UI_PREFIX", "is_ui_path", "mount_ui"]

UI_PREFIX = "/ui"
"""Where the page is served."""

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_HEADERS = {
    # The page loads nothing from elsewhere; the API is same-origin.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_ui_path(path: str) -> bool:
    """Whether `path` is one of the page's files (served without a token)."""
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _assets() -> dict[str, _Asset]:
    """The page's files by name, read once from the package."""
    found: dict[str, _Asset] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            found[entry.name] = _Asset(body, _TYPES[suffix], etag)
    return found


def mount_ui(app: FastAPI) -> None:
    """Serve the page at `/ui/` (index.html) and its files at `/ui/NAME`."""
    assets = _assets()

    def serve(request: Request, name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            return Response(
                f"no file {name!r} in the Tether UI: open {UI_PREFIX}/\n",
                status_code=404,
                media_type="text/plain",
            )
        headers = {**_HEADERS, "ETag": asset.etag}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    @app.get(UI_PREFIX, include_in_schema=False)
    async def ui_root() -> Response:
        return RedirectResponse(f"{UI_PREFIX}/", status_code=307)

    @app.get(f"{UI_PREFIX}/", include_in_schema=False)
    async def ui_index(request: Request) -> Response:
        return serve(request, "index.html")

    @app.get(f"{UI_PREFIX}/{{name}}", include_in_schema=False)
    async def ui_file(request: Request, name: str) -> Response:
        return serve(request, name)
