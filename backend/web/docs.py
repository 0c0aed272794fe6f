"""`/docs`: Swagger UI served by the server itself, so it works offline and
under the pages' Content-Security-Policy (no CDN, no inline script).

Its assets come from the `swagger-ui-bundle-v2` package (Swagger UI 5, which
reads OpenAPI 3.1) and are served under /static/swagger-ui/ (include `router` before /static is
mounted: its route must match first); the script that
starts it is static/js/swagger-init.js. ReDoc is not served (it would need a
CDN or another bundle); /openapi.json is the schema itself.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from ..errors import NotFound

ASSETS_URL = "/static/swagger-ui"
# Only what the page loads: not the bundle's own index.html (an inline
# script), its source maps or its OAuth redirect page.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def page(title: str, openapi_url: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{escape(title)} - API</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{escape(openapi_url)}"></div>
  <script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
  <script src="/static/js/swagger-init.js"></script>
</body>
</html>
"""


@router.get(ASSETS_URL + "/{name}")
def swagger_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no such file: {ASSETS_URL}/{name}")
    return FileResponse(Path(str(swagger_ui_path)) / name, media_type=media_type)


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return HTMLResponse(page(app.title, app.openapi_url or "/openapi.json"))
