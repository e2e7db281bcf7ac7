"""`archq vm ssh`: a command or a shell on a VM's guest over SSH, straight to the guest's address or, when the
client cannot reach it (a guest behind its hypervisor's NAT), through the hypervisor host. The guest's host key
is checked against the keys archq read from its console (the VM's `ssh_host_keys`), the hypervisor's against
archq's known_hosts file; nothing is ever accepted unseen. No HTTP here: client/commands.py fetches the VM and
host JSON and hands them over.

Interface
---------
`plan_connection(vm, host, *, user=None, port=22, jump_user, jump_key, known_hosts) -> Target`
    Where and as whom to connect, from the API's VM and host objects (`host` None: no host known). Raises
    `VmSshError` when the VM is not running, has no address, no known host keys, or no login user.
`login_keys(identities, ask, *, home=None) -> list[LoginKey]`
    The keys to offer: the `-i` files (loaded now, their passphrase asked with `ask`), else the ssh-agent's keys
    and the default ~/.ssh/id_* files (loaded when tried). `ask` None: no terminal, encrypted keys are refused.
`open_session(target, keys, *, jump=None, direct_timeout=2.0, timeout=10.0, ask=None) -> Session`
    An authenticated SSH transport to the guest. `jump` None: directly if the guest's port answers within
    `direct_timeout` with one of the guest's keys, else through the host (what answers directly with another key
    may be a different machine at the same private address); True: through the host only; False: directly only.
`run(session, command, stdin, stdout, stderr) -> int`
    Runs `command` (None: the login shell, without a PTY, reading `stdin`), streams its output, returns its
    exit status (255 when it died without one, as ssh does).
`interactive_shell(session, fd_in=0, fd_out=1) -> int`
    A login shell on a PTY sized like the terminal on `fd_in`, which is put in raw mode meanwhile.
`known_hosts_for(address, key_lines, port=22) -> paramiko.HostKeys`
    The guest's host keys as known_hosts entries of `address`.
Every failure is a `VmSshError` (`HostKeyMismatch` for a key other than the recorded ones) with a one-line
message saying what to do; no message ever holds a private key or a passphrase.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import signal
import socket
import termios
import threading
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko

from queues.ssh_keys import fingerprint, host_entry, host_key_algorithms, host_keys_from_lines, load_known_hosts
from queues.vocabulary import VmState

DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")
BUFFER = 32768
# What a command that died without an exit status (a signal, a dropped connection) exits with, as with ssh.
NO_STATUS = 255

Ask = Callable[[str], str]

# paramiko logs failed negotiations at ERROR; without a handler Python would print them next to our own one-line
# message (and in the middle of the command's stderr).
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class VmSshError(Exception):
    pass


class HostKeyMismatch(VmSshError):
    """The server proved a key other than the recorded ones."""


@dataclass(frozen=True)
class JumpHost:
    name: str
    address: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path

    @property
    def entry(self) -> str:
        return host_entry(self.address, self.port)


@dataclass(frozen=True)
class Target:
    vm: str
    address: str
    port: int
    user: str
    host_keys: paramiko.HostKeys
    # None when the VM cannot be reached through its host; `no_jump` then says why, for the error message.
    jump: JumpHost | None
    no_jump: str = ""

    @property
    def entry(self) -> str:
        return host_entry(self.address, self.port)


@dataclass
class LoginKey:
    source: str  # the key file, or "ssh-agent"
    key: paramiko.PKey | None = None  # None: a default file, loaded (and its passphrase asked) only if tried

    def label(self) -> str:
        return f"{self.source} ({fingerprint(self.key)})" if self.key is not None else self.source


@dataclass
class Session:
    transport: paramiko.Transport
    route: str
    jump: paramiko.Transport | None = None

    def close(self) -> None:
        self.transport.close()
        if self.jump is not None:
            self.jump.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# --- planning ----------------------------------------------------------------------------------------------


def known_hosts_for(address: str, key_lines: Sequence[str], port: int = 22) -> paramiko.HostKeys:
    return host_keys_from_lines(host_entry(address, port), key_lines)


def guest_address(vm: dict) -> str | None:
    """The first IPv4 address of any interface, else the first IPv6 one (IPv4 first: libvirt's NAT networks
    route IPv4 only by default)."""
    addresses = vm.get("addresses") or []
    for family in ("ipv4", "ipv6"):
        for address in addresses:
            if address.get(family) and _routable(address[family]):
                return address[family]
    return None


def _routable(address: str) -> bool:
    """Not link-local: it would need the name of an interface on the client's side, which it cannot know."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_link_local or ip.is_unspecified)


def plan_connection(
    vm: dict,
    host: dict | None,
    *,
    user: str | None = None,
    port: int = 22,
    jump_user: str,
    jump_key: Path,
    known_hosts: Path,
) -> Target:
    name = vm.get("name") or vm.get("id") or "?"
    state = vm.get("state")
    if state != VmState.RUNNING:
        raise VmSshError(f"VM {name} is {state or 'in no known state'}, not running; start it: archq vm start {name}")
    address = guest_address(vm)
    if address is None:
        raise VmSshError(f"VM {name} has no address yet (addresses refresh every few seconds after boot; try again)")
    key_lines = vm.get("ssh_host_keys") or []
    if not key_lines:
        raise VmSshError(
            f"the guest's SSH host keys of VM {name} are not known yet (archq reads them from the console after "
            "first boot; try again in a moment)"
        )
    host_keys = known_hosts_for(address, key_lines, port)
    if not host_keys.lookup(host_entry(address, port)):
        raise VmSshError(f"none of the SSH host keys recorded for VM {name} is of a type this client can check")
    login = user or vm.get("login_user")
    if not login:
        raise VmSshError(f"VM {name}'s image names no default user; give one with -l USER")
    jump, no_jump = _jump_host(vm, host, jump_user, jump_key, known_hosts)
    return Target(name, address, port, login, host_keys, jump, no_jump)


def _jump_host(
    vm: dict, host: dict | None, user: str, key_file: Path, known_hosts: Path
) -> tuple[JumpHost | None, str]:
    if not vm.get("host"):
        return None, "the VM has no host to jump through"
    if host is None:
        return None, f"its host {vm['host']} is not known to the API"
    ssh = host.get("ssh") or {}
    if not ssh.get("address"):
        return None, f"its host {vm['host']} publishes no SSH address to jump through"
    return JumpHost(vm["host"], ssh["address"], int(ssh.get("port") or 22), user, key_file, known_hosts), ""


# --- keys --------------------------------------------------------------------------------------------------


def load_key(path: Path, ask: Ask | None) -> paramiko.PKey:
    """A private key file; its passphrase, if it has one, asked with `ask` (refused when there is none)."""
    try:
        return paramiko.PKey.from_path(path)
    except TypeError:
        pass  # cryptography's way of saying the key is encrypted and no passphrase was given
    except OSError as exc:
        raise VmSshError(f"cannot read key {path}: {exc.strerror or exc}") from None
    except (ValueError, paramiko.SSHException) as exc:
        raise VmSshError(f"{path} is not a private key this client can use: {exc}") from None
    if ask is None:
        raise VmSshError(f"{path} has a passphrase and there is no terminal to ask it on; add it to ssh-agent first")
    passphrase = ask(f"Enter passphrase for key '{path}': ")
    try:
        # paramiko hands the passphrase to cryptography, which wants bytes.
        return paramiko.PKey.from_path(path, passphrase.encode())  # type: ignore[arg-type]
    except (TypeError, ValueError, paramiko.SSHException):
        raise VmSshError(f"cannot decrypt {path}: wrong passphrase") from None


def login_keys(identities: Sequence[Path], ask: Ask | None, *, home: Path | None = None) -> list[LoginKey]:
    if identities:
        return [LoginKey(str(path), load_key(Path(path), ask)) for path in identities]
    # Agent keys first: they need no passphrase. paramiko.Agent finds none without SSH_AUTH_SOCK.
    keys = [LoginKey("ssh-agent", key) for key in paramiko.Agent().get_keys()]
    ssh_dir = (home or Path.home()) / ".ssh"
    keys += [LoginKey(str(ssh_dir / name)) for name in DEFAULT_KEY_NAMES if (ssh_dir / name).is_file()]
    return keys


# --- connecting --------------------------------------------------------------------------------------------


def _describe(keys: Sequence[paramiko.PKey]) -> str:
    return ", ".join(f"{key.get_name()} {fingerprint(key)}" for key in keys)


def _handshake(
    sock: socket.socket | paramiko.Channel,
    recorded: Sequence[paramiko.PKey],
    timeout: float,
    what: str,
    on_mismatch: Callable[[str], str],
) -> paramiko.Transport:
    """An SSH transport whose server proved one of `recorded` keys; `on_mismatch(seen)` words the refusal."""
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    allowed = host_key_algorithms(recorded)
    options.key_types = tuple(name for name in options.key_types if name in allowed)
    try:
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        if "no acceptable host key" in str(exc):
            raise HostKeyMismatch(on_mismatch("no host key of those types")) from None
        raise VmSshError(f"no SSH handshake with {what}: {exc or type(exc).__name__}") from None
    seen = transport.get_remote_server_key()
    if not any(seen.asbytes() == key.asbytes() for key in recorded):
        transport.close()
        raise HostKeyMismatch(on_mismatch(f"host key {seen.get_name()} {fingerprint(seen)}"))
    return transport


def _authenticate(
    transport: paramiko.Transport, user: str, keys: Sequence[LoginKey], ask: Ask | None, where: str
) -> None:
    tried: list[str] = []
    for candidate in keys:
        if candidate.key is None:
            try:
                candidate.key = load_key(Path(candidate.source), ask)
            except VmSshError as exc:
                tried.append(f"{candidate.source} (skipped: {exc})")
                continue
        try:
            transport.auth_publickey(user, candidate.key)
        except paramiko.AuthenticationException:
            tried.append(candidate.label())
            continue
        except paramiko.SSHException as exc:
            # The server hung up (too many tries) or the agent would not sign: no point in trying more keys.
            tried.append(f"{candidate.label()}: {exc}")
            break
        if transport.is_authenticated():
            return
        tried.append(f"{candidate.label()} (the server wants a second factor)")
    if not tried:
        raise VmSshError(
            f"no key to log in to {user}@{where} with: give -i KEY, add one to ssh-agent or create ~/.ssh/id_ed25519"
        )
    raise VmSshError(f"key refused by {user}@{where}: tried {'; '.join(tried)}; give a key it authorises with -i KEY")


def _guest_mismatch(target: Target) -> Callable[[str], str]:
    expected = _describe(list(target.host_keys.lookup(target.entry).values()))
    return lambda seen: (
        f"host key mismatch: VM {target.vm}'s guest at {target.entry} offers {seen}, but archq recorded {expected}; "
        "the guest was re-installed or something else answers at its address: not connecting"
    )


def _open_jump(target: Target, ask: Ask | None, timeout: float) -> tuple[paramiko.Transport, paramiko.Channel]:
    jump = target.jump
    assert jump is not None
    trust = f"archq host trust {jump.name} --address {jump.address} --port {jump.port}"
    known = load_known_hosts(jump.known_hosts)
    # `archq host trust` records a key under the host's address and its archq name; either one will do.
    entries = known.lookup(jump.entry) or known.lookup(host_entry(jump.name, jump.port))
    if not entries:
        raise VmSshError(
            f"the jump host {jump.name} ({jump.entry}) has no host key in {jump.known_hosts}; run `{trust}` "
            "(it shows the key's fingerprint to check) and try again"
        )
    recorded = list(entries.values())
    try:
        sock = socket.create_connection((jump.address, jump.port), timeout=timeout)
    except OSError as exc:
        raise VmSshError(f"cannot reach the jump host {jump.name} at {jump.entry}: {exc.strerror or exc}") from None
    transport = _handshake(
        sock, recorded, timeout, f"the jump host {jump.name} ({jump.entry})",
        lambda seen: (
            f"host key mismatch: the jump host {jump.name} ({jump.entry}) offers {seen}, not the one recorded in "
            f"{jump.known_hosts} ({_describe(recorded)}); if the host was re-installed, check and run `{trust}`"
        ),
    )  # fmt: skip
    try:
        _authenticate(transport, jump.user, [LoginKey(str(jump.key_file))], ask, jump.entry)
        channel = transport.open_channel(
            "direct-tcpip", (target.address, target.port), ("127.0.0.1", 0), timeout=timeout
        )
    except paramiko.ChannelException as exc:
        transport.close()
        raise VmSshError(
            f"the jump host {jump.name} could not connect to {target.entry}: {exc.text} (is the guest's sshd up, "
            "and AllowTcpForwarding on for the jump user?)"
        ) from None
    except VmSshError:
        transport.close()
        raise
    except paramiko.SSHException as exc:
        transport.close()
        raise VmSshError(f"the jump host {jump.name} ({jump.entry}) dropped the connection: {exc}") from None
    return transport, channel


def open_session(
    target: Target,
    keys: Sequence[LoginKey],
    *,
    jump: bool | None = None,
    direct_timeout: float = 2.0,
    timeout: float = 10.0,
    ask: Ask | None = None,
) -> Session:
    mismatch = ""  # what answered at the guest's address directly, if it was not the guest
    if jump is not True:
        try:
            sock = socket.create_connection((target.address, target.port), timeout=direct_timeout)
        except OSError as exc:
            if jump is False or target.jump is None:
                raise VmSshError(
                    f"cannot reach VM {target.vm}'s guest at {target.entry} directly: "
                    f"{exc.strerror or exc or 'timed out'}" + ("" if jump is False else f"; and {target.no_jump}")
                ) from None
        else:
            try:
                return _guest_session(target, sock, keys, ask, timeout, "direct")
            except HostKeyMismatch as exc:
                # A guest's NATed address may well be another machine on the client's own network (every
                # libvirt default network is 192.168.122.0/24): that one is refused, the real guest may be
                # behind the host.
                if jump is False or target.jump is None:
                    raise
                mismatch = str(exc)
    try:
        if target.jump is None:
            raise VmSshError(f"cannot jump to VM {target.vm}: {target.no_jump}")
        jump_transport, channel = _open_jump(target, ask, timeout)
        try:
            route = f"via {target.jump.name} ({target.jump.entry})"
            session = _guest_session(target, channel, keys, ask, timeout, route)
        except VmSshError:
            jump_transport.close()
            raise
    except VmSshError as exc:
        # What the direct attempt met is the news; that the detour failed as well comes second.
        if mismatch:
            raise HostKeyMismatch(f"{mismatch} (and through its host: {exc})") from None
        raise
    session.jump = jump_transport
    return session


def _guest_session(
    target: Target,
    sock: socket.socket | paramiko.Channel,
    keys: Sequence[LoginKey],
    ask: Ask | None,
    timeout: float,
    route: str,
) -> Session:
    recorded = list(target.host_keys.lookup(target.entry).values())
    what = f"VM {target.vm}'s guest at {target.entry}"
    transport = _handshake(sock, recorded, timeout, what, _guest_mismatch(target))
    try:
        _authenticate(transport, target.user, keys, ask, target.entry)
    except VmSshError:
        transport.close()
        raise
    return Session(transport, route)


# --- running -----------------------------------------------------------------------------------------------


def _pump_stdin(channel: paramiko.Channel, stdin: BinaryIO) -> None:
    read = getattr(stdin, "read1", stdin.read)  # read1: pass on what is there now, do not wait for a full buffer
    try:
        while chunk := read(BUFFER):
            channel.sendall(chunk)
    except (OSError, ValueError):
        pass  # the channel closed (the command ended) or stdin did; either way there is nothing left to send
    finally:
        with contextlib.suppress(OSError, EOFError):
            channel.shutdown_write()


def _copy(read: Callable[[int], bytes], out: BinaryIO) -> None:
    while data := read(BUFFER):
        out.write(data)
        out.flush()


def run(session: Session, command: str | None, stdin: BinaryIO | None, stdout: BinaryIO, stderr: BinaryIO) -> int:
    try:
        channel = session.transport.open_session()
        if command is None:
            channel.invoke_shell()
        else:
            channel.exec_command(command)
    except paramiko.SSHException as exc:
        raise VmSshError(f"the guest refused to run {'a shell' if command is None else 'the command'}: {exc}") from None
    if stdin is not None:
        # A daemon thread: it may be blocked reading a terminal when the command ends, and must not keep us.
        threading.Thread(target=_pump_stdin, args=(channel, stdin), daemon=True).start()
    else:
        channel.shutdown_write()
    errors = threading.Thread(target=_copy, args=(channel.recv_stderr, stderr), daemon=True)
    errors.start()
    _copy(channel.recv, stdout)
    errors.join()
    status = channel.recv_exit_status()
    channel.close()
    return NO_STATUS if status < 0 else status


def interactive_shell(session: Session, fd_in: int = 0, fd_out: int = 1) -> int:
    columns, lines = os.get_terminal_size(fd_in)
    try:
        channel = session.transport.open_session()
        channel.get_pty(term=os.environ.get("TERM", "vt100"), width=columns, height=lines)
        channel.invoke_shell()
    except paramiko.SSHException as exc:
        raise VmSshError(f"the guest refused an interactive shell: {exc}") from None
    saved = termios.tcgetattr(fd_in)

    def resized(*_args: object) -> None:
        channel.resize_pty(*os.get_terminal_size(fd_in))

    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        # Raw: every key (Ctrl-C, Ctrl-D, arrows) goes to the guest's terminal, which echoes and interprets it.
        tty.setraw(fd_in)
        watched = [channel, fd_in]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if channel in ready:
                data = channel.recv(BUFFER)  # on a PTY stderr arrives merged into this stream
                if not data:
                    break
                os.write(fd_out, data)
            if fd_in in ready:
                data = os.read(fd_in, BUFFER)
                if data:
                    channel.sendall(data)
                else:
                    watched.remove(fd_in)
                    channel.shutdown_write()
    finally:
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
    status = channel.recv_exit_status()
    channel.close()
    return NO_STATUS if status < 0 else status
