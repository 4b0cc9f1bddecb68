"""The API's documentation page, ``/docs``, served from the installed package.

FastAPI's own page loads Swagger UI from a CDN: on an appliance without internet that is a
blank page. Here the page, its script and its style all come from `swagger-ui-bundle`
(Apache-2.0, Swagger UI as released), and no favicon is fetched from anywhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

router = APIRouter(include_in_schema=False)
_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


@router.get("/docs")
def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="cairn appliance API",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="data:,")


@router.get("/docs/assets/{name}")
def asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise HTTPException(404, f"no documentation asset {name!r}")
    return FileResponse(Path(swagger_ui_path) / name, media_type=_ASSETS[name])
