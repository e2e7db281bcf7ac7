"""Swagger UI for the OpenAPI document at /api/v1/docs, served from the `swagger-ui-bundle` package's files
(never copies kept in this tree: upgrading the package upgrades the page)."""

from __future__ import annotations

from flask import Blueprint, abort, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("docs", __name__)

# The files the page loads; nothing else of the package's directory is served.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"})
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>archq API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout",
    });
  </script>
</body>
</html>
"""


@bp.get("/docs")
def docs_page():
    """This API's reference in Swagger UI (no token needed; Authorize takes one to try requests)
    ---
    get:
      operationId: getDocs
      responses:
        200: {description: the page, content: {text/html: {schema: {type: string}}}}
    """
    return PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/docs/<asset>")
def docs_asset(asset: str):
    """A file of Swagger UI (no token needed)
    ---
    get:
      operationId: getDocsAsset
      responses:
        200: {description: the file, content: {"*/*": {schema: {type: string, format: binary}}}}
    """
    if asset not in ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, asset, max_age=86400)
