"""A VM's serial console through its host's worker and Redis (`queues/console.py`): the tail of its log, and
interactive sessions between a user's terminal (a WebSocket) and libvirt's console stream on the host."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

from queues.config import Settings
from queues.console import (
    DATA,
    ENDED,
    ConsoleChannel,
    ConsoleSessions,
    ConsoleTail,
    Holder,
    SessionOpen,
)
from queues.console import Busy as HolderBusy
from web.errors import Conflict, NotFound, Unavailable
from web.extensions import db
from web.models import Host, Vm, VmEvent
from web.services.hosts import host_state
from web.services.vms import get_vm

ASK_TIMEOUT_S = 5.0
OPEN_TIMEOUT_S = 10.0


def _reachable(vm_id: str, settings: Settings) -> Vm:
    """The VM, if its host is up; a clear refusal otherwise."""
    vm = get_vm(vm_id)
    if vm.host is None:
        raise Conflict(
            f"VM {vm.id} has not reached a host yet (state {vm.state}); it has no console",
            code="wrong_state",
            fields={"state": [vm.state]},
        )
    host = db.session.get(Host, vm.host)
    if host is None or host_state(host, settings) == "down":
        raise Conflict(f"the VM's host {vm.host!r} is down; its console is unreachable", code="host_down")
    return vm


def console_tail(vm_id: str, nbytes: int, channel: ConsoleChannel, settings: Settings) -> ConsoleTail:
    vm = _reachable(vm_id, settings)
    tail = channel.ask(vm.host, vm.id, nbytes, timeout_s=ASK_TIMEOUT_S)
    if tail is None:
        raise Unavailable(
            f"host {vm.host!r} did not answer for the console within {ASK_TIMEOUT_S:.0f}s",
            retry_after_s=2,
            code="console_unavailable",
        )
    if tail.error:
        raise NotFound(tail.error)
    return tail


class Terminal(Protocol):
    """The user's side of a session (a WebSocket): bytes both ways, JSON text for what is not terminal data."""

    def receive(self, timeout_s: float) -> bytes | None:
        """Keystrokes, or None after `timeout_s`; raises `TerminalClosed` when the user has gone."""

    def send(self, data: bytes) -> None: ...

    def control(self, message: dict) -> None: ...


class TerminalClosed(Exception):
    """The user closed the terminal."""


def _record(vm_id: str, kind: str, actor: str, message: str) -> None:
    db.session.add(VmEvent(vm_id=vm_id, kind=kind, actor=actor, message=message))
    db.session.commit()


def _since(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def open_session(vm_id: str, actor: str, force: bool, sessions: ConsoleSessions, settings: Settings) -> OpenSession:
    """Become the VM's console writer and have its worker attach libvirt's console stream. Refused (409
    `console_busy`) while another session holds it, unless `force`, which ends that one."""
    vm = _reachable(vm_id, settings)
    holder = Holder(session=uuid.uuid4().hex, actor=actor, since=time.time())
    try:
        previous = sessions.claim(vm.id, holder, force)
    except HolderBusy as busy:
        raise Conflict(
            f"the console of VM {vm.name} is held by {busy.holder.actor} since {_since(busy.holder.since)}; "
            "force to take it over",
            code="console_busy",
            fields={"holder": [busy.holder.actor]},
        ) from None
    if previous is not None:
        sessions.close(previous.session, f"the console was taken over by {actor}")
    session = OpenSession(vm.id, vm.host or "", holder, sessions)
    try:
        sessions.request(session.host, SessionOpen(holder.session, vm.id, actor, holder.since))
        first = sessions.receive(holder.session, OPEN_TIMEOUT_S)
    except BaseException:
        session.release()
        raise
    if first is None or first.startswith(ENDED):
        session.release()
        if first is None:
            raise Unavailable(
                f"host {vm.host!r} did not open the console within {OPEN_TIMEOUT_S:.0f}s",
                retry_after_s=2,
                code="console_unavailable",
            )
        raise Conflict(first[1:].decode(errors="replace"), code="console_unavailable")
    took_over = f"; took it over from {previous.actor}" if previous is not None else ""
    _record(vm.id, "console_opened", actor, f"console session opened on host {vm.host}{took_over}")
    return session


class OpenSession:
    """A session the worker has attached; `pump` runs it to its end."""

    def __init__(self, vm_id: str, host: str, holder: Holder, sessions: ConsoleSessions) -> None:
        self.vm_id, self.host, self.holder = vm_id, host, holder
        self._sessions = sessions

    @property
    def id(self) -> str:
        return self.holder.session

    def release(self) -> None:
        self._sessions.release(self.vm_id, self.id)
        self._sessions.close(self.id, "closed")

    def pump(self, terminal: Terminal) -> str:
        """Carry bytes both ways until one side ends; returns why it ended (also told to the user)."""
        ended = threading.Event()
        reason: list[str] = []

        def end(why: str) -> None:
            if not ended.is_set():
                reason.append(why)
                ended.set()

        def outbound() -> None:
            # The guest's output, and once a second (a guest printing without pause never lets BLPOP time
            # out) the watch on the worker and the refresh of the claim, in one loop.
            checked = time.monotonic()
            while not ended.is_set():
                frame = self._sessions.receive(self.id, 1.0)
                if time.monotonic() - checked >= 1.0:
                    checked = time.monotonic()
                    if not self._sessions.worker_alive(self.id):
                        end(f"the worker on host {self.host} stopped answering (restarted or gone); "
                            "this session is over, open the console again")  # fmt: skip
                    elif not self._sessions.still_holds(self.vm_id, self.id):
                        current = self._sessions.holder(self.vm_id)
                        end(f"the console was taken over by {current.actor if current else 'another session'}")
                if frame is None:
                    continue
                if frame.startswith(DATA):
                    terminal.send(frame[1:])
                elif frame.startswith(ENDED):
                    end(frame[1:].decode(errors="replace"))

        thread = threading.Thread(target=_guarded(outbound, end), name=f"console-{self.id[:8]}", daemon=True)
        thread.start()
        try:
            while not ended.is_set():
                try:
                    keys = terminal.receive(0.5)
                except TerminalClosed:
                    end("closed by the user")
                    break
                if keys:
                    self._sessions.send(self.id, keys)
        finally:
            end("the API closed the session")
            # Released before waiting for the output thread (up to a second in BLPOP): the user may reconnect
            # at once, and must not find their own ended session holding the console.
            self.release()
            thread.join(timeout=3)
        why = reason[0]
        _record(self.vm_id, "console_ended", self.holder.actor, f"console session ended: {why}")
        with contextlib.suppress(TerminalClosed):
            terminal.control({"type": "ended", "message": why})
        return why


def _guarded(loop, end):
    def run() -> None:
        try:
            loop()
        except TerminalClosed:
            end("closed by the user")
        except Exception as exc:  # the session must end, with its cause, whatever broke
            end(f"the console session failed: {exc}")

    return run


def vm_events(vm_id: str) -> list[VmEvent]:
    vm = get_vm(vm_id)
    return db.session.scalars(db.select(VmEvent).where(VmEvent.vm_id == vm.id).order_by(VmEvent.id)).all()


def opened_message(session: OpenSession) -> dict:
    return {"type": "opened", "vm_id": session.vm_id, "host": session.host, "session": session.id}
