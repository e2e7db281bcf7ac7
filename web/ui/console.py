"""The VM page's interactive console: xterm.js (installed by npm into web/ui/xterm/node_modules at setup, see
.ci/setup) and the WebSocket it talks to, the API's own session (web/console_ws.py) behind the UI's cookie."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import abort, g, request, send_from_directory

from web import console_ws
from web.console_ws import sock
from web.ui import bp

XTERM_DIR = Path(__file__).parent / "xterm" / "node_modules" / "@xterm" / "xterm"
# The only files the page needs; nothing else under node_modules is served.
XTERM_FILES = {"xterm.js": "lib", "xterm.css": "css"}


@bp.get("/xterm/<name>")
def xterm_asset(name: str):
    if name not in XTERM_FILES:
        abort(404)
    if not (XTERM_DIR / XTERM_FILES[name] / name).is_file():
        abort(404, "xterm.js is not installed: run `npm ci --prefix web/ui/xterm` (.ci/setup does)")
    return send_from_directory(XTERM_DIR / XTERM_FILES[name], name, max_age=3600)


@sock.route("/vms/<vm_id>/console/ws", bp=bp)
def vm_console_session(ws, vm_id: str) -> None:
    # A browser sends the session cookie with a WebSocket from any page (SameSite=Strict aside): only this
    # site's own pages may open one (cross-site WebSocket hijacking).
    origin = urlsplit(request.headers.get("Origin", ""))
    if origin.netloc != request.host:
        console_ws.refuse(ws, 403, "forbidden", "a console WebSocket must come from archq's own pages")
        return
    console_ws.serve(ws, vm_id, g.actor, request.args.get("force", "") in ("1", "true"))
