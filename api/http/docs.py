"""``/openapi.json`` and the browsable ``/docs`` page (Swagger UI), all served locally.

Swagger UI's files come from the ``swagger-ui-py`` package (Swagger UI 5, which renders OpenAPI 3.1;
``swagger-ui-bundle`` still ships 4.15, which refuses 3.1 documents). Only its static files are
used, located without importing the package. The page, its start-up script and the assets are
relative to the page, so the docs work behind any prefix; the page's CSP allows nothing but this
server (no CDN is needed, or reachable).
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

import orjson
from aiohttp import web

ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"""

_INIT = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  displayRequestDuration: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def swagger_ui_dir() -> Path:
    """Swagger UI's static files, as installed by swagger-ui-py."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: it serves the /docs page's assets")
    static = Path(spec.submodule_search_locations[0]) / "static"
    if missing := [name for name in ASSETS if not (static / name).is_file()]:
        raise RuntimeError(f"swagger-ui-py at {static} lacks {missing}")
    return static


def add_docs_routes(app: web.Application, document: dict, title: str) -> None:
    """``GET /openapi.json``, ``GET /docs``, ``GET /docs/init.js`` and ``GET /docs/{asset}`` on ``app``."""
    static = swagger_ui_dir()
    body = orjson.dumps(document)
    page = _PAGE.format(title=html.escape(title)).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def docs_page(request: web.Request) -> web.Response:
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers={"Content-Security-Policy": _CSP}
        )

    async def docs_init(request: web.Request) -> web.Response:
        return web.Response(text=_INIT, content_type="text/javascript")

    async def docs_asset(request: web.Request) -> web.FileResponse:
        name = request.match_info["asset"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.FileResponse(static / name, headers={"Cache-Control": "public, max-age=86400"})

    async def docs_slash(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("../docs")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/", docs_slash)
    app.router.add_get("/docs/init.js", docs_init)
    app.router.add_get("/docs/{asset}", docs_asset)
