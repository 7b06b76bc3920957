"""The web page at ``/``: plain HTML, one script and one stylesheet, package data.

The page and its files hold no data, so they need no token: the script asks for one,
keeps it in ``sessionStorage`` and sends it in the ``Authorization`` header of every
API call (the event streams are read with ``fetch``, never with a token in a URL).
"""

from importlib.resources import files
from typing import Final

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["PAGE_HEADERS", "mount_page"]

_PACKAGE: Final = "stageflow.adapters.http"

PAGE_HEADERS: Final = {
    # Only the page's own files run; nothing is fetched from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The headers the page is served with."""


def mount_page(app: FastAPI) -> None:
    """Serve the web page at ``/`` and its files under ``/static/`` (no token needed;
    neither is in the OpenAPI document)."""
    page = (files(_PACKAGE) / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(packages=[(_PACKAGE, "static")]), name="stageflow-static")
