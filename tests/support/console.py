"""Reading an interactive console session (client/console.py's WebSocket) in tests and benchmarks."""

from __future__ import annotations

import json
import time

from simple_websocket import Client, ConnectionClosed


class Transcript:
    """What a session showed: the guest's bytes, and the API's JSON messages (`ended`, ...)."""

    def __init__(self, ws: Client) -> None:
        self.ws = ws
        self.output = b""
        self.messages: list[dict] = []

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def _read(self, timeout_s: float) -> bool:
        try:
            message = self.ws.receive(timeout=timeout_s)
        except ConnectionClosed:
            return False
        if isinstance(message, bytes | bytearray):
            self.output += bytes(message)
        elif isinstance(message, str):
            self.messages.append(json.loads(message))
        return True

    def until_output(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            remaining = deadline - time.monotonic()
            shown = self.text()[-500:]
            assert remaining > 0, f"no {needle!r} on the console within {timeout:.0f}s; it showed {shown!r}"
            assert self._read(min(remaining, 0.5)) or needle in self.text(), f"closed; showed {self.text()[-500:]!r}"
        return self.text()

    def until_ended(self, timeout: float = 30.0) -> str:
        """The `ended` message's text."""
        deadline = time.monotonic() + timeout
        while not any(m.get("type") == "ended" for m in self.messages):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the session did not end within {timeout:.0f}s; messages {self.messages}"
            if not self._read(min(remaining, 0.5)):
                break
        ended = [m for m in self.messages if m.get("type") == "ended"]
        assert ended, f"the connection closed without an `ended` message; messages {self.messages}"
        return ended[0]["message"]


def run(transcript: Transcript, command: str, expect: str, timeout: float = 30.0) -> str:
    """Type `command` and Enter; the console's text once `expect` appears."""
    transcript.ws.send(command.encode() + b"\r")
    return transcript.until_output(expect, timeout)
