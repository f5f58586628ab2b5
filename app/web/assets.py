"""Static files and the API docs, served from the image: nothing is fetched from a CDN, so the pages
and ``/api/docs`` work on a cluster without internet access.

Text answers are gzip-compressed. A file whose URL names its version (``htmx-2.0.11.min.js``,
``swagger-ui-5.35.0/``, or any ``?v=<content hash>`` link the templates build with ``asset()``) is
cached for a year as immutable; other files are revalidated (ETag) on each use.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.web.security import API_DOCS_CONTENT_SECURITY_POLICY

SWAGGER_UI = "swagger-ui-5.35.0"  # swagger-ui-dist from the npm registry, pinned
GZIP_MIN_BYTES = 1024
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# A version in the file or folder name: htmx-2.0.11.min.js, swagger-ui-5.35.0/swagger-ui.css.
VERSIONED = re.compile(r"-\d+\.\d+\.\d+[./]")


class CachedStatic(StaticFiles):
    """StaticFiles with a Cache-Control header fitting how the URL is versioned."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            query = scope.get("query_string", b"")
            versioned = VERSIONED.search(path) is not None or query.startswith(b"v=")
            response.headers["Cache-Control"] = IMMUTABLE if versioned else REVALIDATE
        return response


def asset_url(static_dir: Path, name: str) -> str:
    """``/static/<name>?v=<hash of its content>``: a new file gets a new URL, so it may be cached forever."""
    return f"/static/{name}?v={_digest(static_dir / name)}"


@cache
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} · API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/static/{ui}/swagger-ui.css">
</head>
<body>
  <main id="swagger-ui" data-openapi-url="{openapi}"></main>
  <script src="/static/{ui}/swagger-ui-bundle.js"></script>
  <script src="{init}"></script>
</body>
</html>
"""


def docs_page(title: str, openapi_url: str, init_url: str) -> str:
    # No inline script (the CSP forbids them): the initialiser is a static file reading data-openapi-url.
    return DOCS_PAGE.format(title=title, ui=SWAGGER_UI, openapi=openapi_url, init=init_url)


def install(app: FastAPI, static_dir: Path) -> None:
    """Mount /static, compress text answers, serve /api/docs from local files, expose ``asset()``."""
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES)
    app.mount("/static", CachedStatic(directory=str(static_dir)), name="static")
    templates = getattr(app.state, "templates", None)
    if templates is not None:
        templates.env.globals["asset"] = lambda name: asset_url(static_dir, name)
    docs_url, openapi_url = app.docs_url, app.openapi_url
    if docs_url is None or openapi_url is None:
        return
    # FastAPI's own docs route loads Swagger UI from a CDN: replace it with one that does not.
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != docs_url]
    html = docs_page(app.title, openapi_url, asset_url(static_dir, "swagger-init.js"))

    @app.get(docs_url, include_in_schema=False, response_class=HTMLResponse)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": API_DOCS_CONTENT_SECURITY_POLICY})
