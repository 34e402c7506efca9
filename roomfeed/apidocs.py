"""Interactive API docs at `/docs`: Swagger UI over `/openapi.json`, served from this process.

Swagger UI's files come from the `swagger-ui-py` wheel (its `swagger_ui/static`, Swagger UI 5: it reads
OpenAPI 3.1), served locally: no CDN. The page loads only this origin's files under a CSP of its own
(no inline script: the start-up script is `/docs/init.js`; Swagger UI sets inline styles, so styles
allow them), and may never be framed. "Try it out" calls this origin with the bearer credential the
reader enters under "Authorize".
"""

from __future__ import annotations

import importlib.resources
import mimetypes

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from roomfeed.errors import NotFound

SWAGGER_UI = importlib.resources.files("swagger_ui") / "static"
# The Swagger UI files the page uses (nothing else of the package is served).
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>roomfeed API</title>
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""
INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    tryItOutEnabled: false,
    validatorUrl: null,
  });
});
"""


async def docs_page(request: Request) -> Response:
    """The interactive reference (Swagger UI) of /openapi.json."""
    return HTMLResponse(PAGE, headers={**HEADERS, "Cache-Control": "no-cache"})


async def docs_init(request: Request) -> Response:
    return Response(
        INIT, media_type="text/javascript; charset=utf-8", headers={**HEADERS, "Cache-Control": "no-cache"}
    )


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise NotFound(f"no docs file {name}")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type.endswith("javascript"):
        media_type += "; charset=utf-8"
    body = (SWAGGER_UI / name).read_bytes()
    return Response(body, media_type=media_type, headers={**HEADERS, "Cache-Control": "public, max-age=3600"})


# Pages and files, not API operations: left out of the document.
ROUTES: list[BaseRoute] = [
    Route("/docs", docs_page, methods=["GET"], include_in_schema=False),
    Route("/docs/init.js", docs_init, methods=["GET"], include_in_schema=False),
    Route("/docs/{name:str}", docs_asset, methods=["GET"], include_in_schema=False),
]
