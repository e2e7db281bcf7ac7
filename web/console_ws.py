"""The WebSocket end of an interactive console session, shared by the API (a bearer token) and the web UI (its
session cookie): a thin adapter from simple-websocket (through Flask-Sock) to `web.services.console`.

Why Flask-Sock: it runs on the WSGI server archq already has. `archq api` is gunicorn with threaded workers
(gthread), where simple-websocket takes over the request's socket, so a session costs one gunicorn thread and
no second server, port or async framework (Flask-SocketIO would bring its own protocol and an eventlet or
gevent worker class)."""

from __future__ import annotations

import json

from flask import current_app
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server

from web.errors import ApiError, error_body
from web.services import console

sock = Sock()


class WebSocketTerminal:
    """`console.Terminal` on a WebSocket: binary frames are terminal bytes, text frames JSON messages."""

    def __init__(self, ws: Server) -> None:
        self._ws = ws

    def receive(self, timeout_s: float) -> bytes | None:
        try:
            message = self._ws.receive(timeout=timeout_s)
        except ConnectionClosed:
            raise console.TerminalClosed() from None
        if message is None:
            return None
        # Text frames are keystrokes too (a browser's terminal sends strings); nothing else is expected.
        return message.encode() if isinstance(message, str) else bytes(message)

    def send(self, data: bytes) -> None:
        try:
            self._ws.send(data)
        except ConnectionClosed:
            raise console.TerminalClosed() from None

    def control(self, message: dict) -> None:
        try:
            self._ws.send(json.dumps(message))
        except ConnectionClosed:
            raise console.TerminalClosed() from None


def serve(ws: Server, vm_id: str, actor: str, force: bool) -> None:
    """Run one session on `ws`; a refusal (busy, host down, worker silent) is a JSON `error` message."""
    ext = current_app.extensions["archq"]
    terminal = WebSocketTerminal(ws)
    try:
        session = console.open_session(vm_id, actor, force, ext.console_sessions, ext.settings)
    except ApiError as exc:
        refuse(ws, exc.status, exc.code, exc.message, exc.fields)
        return
    terminal.control(console.opened_message(session))
    session.pump(terminal)


def refuse(ws: Server, status: int, code: str, message: str, fields: dict | None = None) -> None:
    """The error a session could not open with, in the API's error format, as the one message on `ws`."""
    WebSocketTerminal(ws).control({"type": "error", "status": status, **error_body(code, message, fields)})
