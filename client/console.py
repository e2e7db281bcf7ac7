"""`archq vm console`: the VM's serial console in this terminal, like `virsh console`.

The terminal goes into raw mode, so every key (Ctrl-C too) reaches the guest; `Ctrl-]` ends the session. The
bytes travel over the API's WebSocket (`/api/v1/vms/<id>/console/ws`) with the same bearer token as every
other command; simple-websocket is the client (pure Python, threads, no event loop to own)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from simple_websocket import Client, ConnectionClosed
from simple_websocket import ConnectionError as HandshakeRefused

ESCAPE = b"\x1d"  # Ctrl-]
REFUSALS = {
    401: "the token is unknown or revoked",
    403: "a console needs the operator role",
    404: "no such API path (is this archq's API?)",
}


class ConsoleRefused(Exception):
    """The API refused the session (busy, host down, worker silent); the message says why."""


def ws_url(api_base: str, vm_id: str, force: bool) -> str:
    """The session's ws:// (or wss://) URL from the API's http(s) base URL."""
    parts = urlsplit(api_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/vms/{vm_id}/console/ws"
    return urlunsplit((scheme, parts.netloc, path, "force=1" if force else "", ""))


def connect(api_base: str, token: str, vm_id: str, force: bool = False) -> tuple[Client, dict]:
    """An open session and the API's `opened` message; raises ConsoleRefused with the API's reason."""
    try:
        ws = Client.connect(ws_url(api_base, vm_id, force), headers={"Authorization": f"Bearer {token}"})
    except HandshakeRefused as exc:
        # The role rule answers before the upgrade: 401 (token unknown or revoked) or 403 (not an operator).
        raise ConsoleRefused(
            f"the API refused the console with HTTP {exc.status_code}: {REFUSALS.get(exc.status_code, '')}"
        ) from None
    except (OSError, ConnectionClosed) as exc:
        raise ConsoleRefused(f"cannot open a WebSocket to the API: {exc}") from None
    # One keystroke per frame: Nagle's algorithm would hold a key back behind the previous one's ACK.
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        first = ws.receive(timeout=30)
    except ConnectionClosed:
        first = None
    message = _control(first) if isinstance(first, str) else None
    if message is None or message.get("type") != "opened":
        with contextlib.suppress(ConnectionClosed):
            ws.close()
        error = (message or {}).get("error") or {}
        raise ConsoleRefused(error.get("message") or "the API closed the console without saying why")
    return ws, message


def _control(text: str) -> dict | None:
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        # TCSANOW, not setraw's default TCSAFLUSH: keys typed (or pasted) as the session opened are kept, not discarded.
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def interact(ws: Client, stdin_fd: int, out=None) -> str:
    """Copy keys to the session and its output to `out` until Ctrl-], the end of stdin or the session's end;
    returns why it ended."""
    out = out or sys.stdout.buffer
    ended = threading.Event()
    reason: list[str] = []

    def end(why: str) -> None:
        if not ended.is_set():
            reason.append(why)
            ended.set()

    def output() -> None:
        while not ended.is_set():
            try:
                message = ws.receive(timeout=0.5)
            except ConnectionClosed:
                end("the API closed the connection")
                return
            if isinstance(message, bytes | bytearray):
                out.write(message)
                out.flush()
            elif isinstance(message, str):
                control = _control(message) or {}
                if control.get("type") == "ended":
                    end(control.get("message") or "the session ended")

    reader = threading.Thread(target=output, name="console-output", daemon=True)
    reader.start()
    with raw_mode(stdin_fd):
        while not ended.is_set():
            ready, _, _ = select.select([stdin_fd], [], [], 0.2)
            if not ready:
                continue
            keys = os.read(stdin_fd, 1024)
            if not keys:
                end("end of input")
                break
            if ESCAPE in keys:
                keys = keys[: keys.index(ESCAPE)]
                if keys:
                    ws.send(keys)
                end("escape (Ctrl-])")
                break
            try:
                ws.send(keys)
            except ConnectionClosed:
                end("the API closed the connection")
    ws.close()
    reader.join(timeout=2)
    return reason[0]
