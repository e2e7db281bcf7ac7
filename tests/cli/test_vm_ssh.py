"""`archq vm ssh VM [-- COMMAND]` end to end: the command asks a real HTTP server for the VM and its host, and
connects with paramiko to real sshd instances, one as the guest (on 127.0.0.2) and one as the hypervisor host
it can jump through. The guest must prove a key of the VM's `ssh_host_keys`, the host one recorded in archq's
known_hosts; every failure is one actionable line and exit status 255, while a command's own status passes
through."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import paramiko
import pytest
from click.testing import CliRunner, Result

from client.cli import main
from client.ssh import VmSshError, known_hosts_for, load_key, login_keys, open_session, plan_connection, run
from queues.ssh_keys import fingerprint
from tests.support.services import ROOT
from tests.support.sshd import SSHD, keygen, make_sshd, natted_network, running_sshd

pytestmark = pytest.mark.skipif(not Path(SSHD).exists(), reason="needs openssh-server")

VM_ID = "0d6c3f0e-2b8f-4a8e-9f5e-3c1d2a4b5e6f"


@dataclass
class FakeApi:
    """What the archq API answers for one VM and its host (GET /vms?name=, /vms/<id>, /hosts/<name>)."""

    vm: dict
    hosts: dict[str, dict] = field(default_factory=dict)
    url: str = ""


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path.removeprefix("/api/v1"))
            path, query = url.path, dict(parse_qsl(url.query))
            if path == "/vms":
                status, answer = 200, {"vms": [api.vm] if query.get("name") in (None, api.vm["name"]) else []}
            elif path == f"/vms/{api.vm['id']}":
                status, answer = 200, {"vm": api.vm}
            elif path.startswith("/hosts/") and path.removeprefix("/hosts/") in api.hosts:
                status, answer = 200, {"host": api.hosts[path.removeprefix("/hosts/")]}
            else:
                status, answer = 404, {"error": {"code": "not_found", "message": f"no {path}"}}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


@pytest.fixture
def guest(tmp_path):
    """The "guest": an sshd on 127.0.0.2, as a VM's address is another machine's."""
    with running_sshd(make_sshd(tmp_path / "guest", address="127.0.0.2")) as server:
        yield server


@pytest.fixture
def jump_host(tmp_path):
    """The "hypervisor host": an sshd on 127.0.0.1 that forwards TCP (AllowTcpForwarding is on by default)."""
    with running_sshd(make_sshd(tmp_path / "jump")) as server:
        yield server


def vm_json(guest, **changes) -> dict:
    vm = {
        "id": VM_ID, "name": "web1", "state": "running", "host": "h1",
        "addresses": [{"mac": "52:54:00:12:34:56", "ipv4": guest.address, "ipv6": None, "source": "lease"}],
        "addresses_at": "2026-12-01T00:00:00Z",
        "ssh_host_keys": [guest.host_key_line()],
        "login_user": guest.user,
    }  # fmt: skip
    return {**vm, **changes}


@pytest.fixture
def api(guest, jump_host, tmp_path, monkeypatch) -> Iterator[FakeApi]:
    state = FakeApi(vm_json(guest), {"h1": {"name": "h1", "ssh": {"address": "127.0.0.1", "port": jump_host.port}}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # The user's environment as the command reads it: no agent, an empty home, archq's SSH settings.
    monkeypatch.setenv("ARCHQ_URL", state.url)
    monkeypatch.setenv("ARCHQ_TOKEN", "test-token")
    monkeypatch.setenv("ARCHQ_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    monkeypatch.setenv("ARCHQ_SSH_KEY", str(jump_host.client_key))
    monkeypatch.setenv("ARCHQ_SSH_USER", jump_host.user)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    yield state
    httpd.shutdown()
    httpd.server_close()


def archq_ssh(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["vm", "ssh", *args], input=input)


def port_of(sshd) -> list[str]:
    return ["-p", str(sshd.port)]


def trust_jump_host(known_hosts: Path, jump_host) -> None:
    """What `archq host trust h1 --address 127.0.0.1 --port P` records."""
    known_hosts.write_text(f"[127.0.0.1]:{jump_host.port} {jump_host.host_key_line()}\n")


# --- running commands ---------------------------------------------------------------------------------------


def test_a_command_runs_on_the_guest_and_its_output_and_exit_status_pass_through(api, guest):
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "echo out; echo err >&2; exit 3")
    assert result.exit_code == 3, result.output
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_the_command_words_are_joined_as_ssh_joins_them(api, guest):
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "printf", "%s-%s", "a", "b")
    assert (result.exit_code, result.stdout) == (0, "a-b")


def test_stdin_reaches_the_command(api, guest):
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "tr a-z A-Z", input="hello\n")
    assert (result.exit_code, result.stdout) == (0, "HELLO\n")


def test_without_a_command_or_a_terminal_the_login_shell_reads_stdin(api, guest):
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), input="echo $((6*7))\nexit 4\n")
    assert (result.exit_code, result.stdout) == (4, "42\n")


def test_the_user_is_the_images_login_user_unless_given(api, guest, tmp_path):
    api.vm["login_user"] = "debian"  # not a user of the test machine's sshd
    refused = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "true")
    assert refused.exit_code == 255 and "key refused by debian@" in refused.stderr
    given = archq_ssh("web1", "-l", guest.user, "-i", str(guest.client_key), *port_of(guest), "--", "id -un")
    assert (given.exit_code, given.stdout) == (0, f"{guest.user}\n")


def test_without_i_the_default_key_in_home_is_used(api, guest, tmp_path):
    ssh_dir = tmp_path / "home" / ".ssh"
    ssh_dir.mkdir(parents=True)
    shutil.copy(guest.client_key, ssh_dir / "id_ed25519")
    result = archq_ssh("web1", *port_of(guest), "--", "echo via-default-key")
    assert (result.exit_code, result.stdout) == (0, "via-default-key\n")


def test_without_i_the_ssh_agents_key_is_used(api, guest, tmp_path, monkeypatch):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        for _ in range(50):
            if sock.exists():
                break
            threading.Event().wait(0.05)
        subprocess.run(["ssh-add", "-q", str(guest.client_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        result = archq_ssh("web1", *port_of(guest), "--", "echo via-agent")
        assert (result.exit_code, result.stdout) == (0, "via-agent\n")
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_on_a_terminal_without_a_command_it_is_an_interactive_shell_sized_like_the_terminal(api, guest):
    """A real pseudo-terminal: the command must put it in raw mode, give the guest a PTY of its size, relay the
    keys typed and the screen, exit with the shell's status, and leave the terminal as it found it."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    before = termios.tcgetattr(terminal)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm"}
    argv = [sys.executable, "-m", "client.cli", "vm", "ssh", "web1", "-i", str(guest.client_key), *port_of(guest)]
    proc = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=ROOT)
    try:
        screen = _read_until(controller, b"# " if guest.user == "root" else b"$ ", proc)  # the shell's prompt
        os.write(controller, b"echo size=$(stty size) term=$TERM; exit 5\r")
        screen += _read_until(controller, None, proc)
        assert proc.wait(timeout=10) == 5, screen
        assert b"size=33 111 term=xterm" in screen
        assert termios.tcgetattr(terminal) == before
    finally:
        proc.kill()
        proc.wait()
        os.close(controller)
        os.close(terminal)


def _read_until(fd: int, marker: bytes | None, proc: subprocess.Popen, timeout: float = 15.0) -> bytes:
    """What the terminal shows until `marker` appears (None: until the program exits)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker is not None and marker in seen:
            return seen
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # EIO: the program closed its end
                return seen
        elif marker is None and proc.poll() is not None:
            return seen
    raise AssertionError(f"timed out; the terminal showed {seen!r}")


# --- the guest's host key ------------------------------------------------------------------------------------


def test_the_guest_proves_a_key_archq_recorded_and_comments_and_unknown_lines_do_not_matter(api, guest):
    api.vm["ssh_host_keys"] = ["ssh-dss AAAAB3NzaC1kc3M= old-dsa-key", "not a key", guest.host_key_line() + " x"]
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "echo trusted")
    assert (result.exit_code, result.stdout) == (0, "trusted\n")


def test_another_key_in_ssh_host_keys_is_a_mismatch_naming_both_fingerprints(api, guest, tmp_path):
    impostor = tmp_path / "impostor_ed25519"
    keygen(impostor)
    api.vm["ssh_host_keys"] = [impostor.with_suffix(".pub").read_text()]
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "echo never")
    assert result.exit_code == 255 and result.stdout == ""
    seen = fingerprint(paramiko.Ed25519Key.from_private_key_file(str(guest.host_key)))
    expected = fingerprint(paramiko.Ed25519Key.from_private_key_file(str(impostor)))
    message = result.stderr
    assert message.startswith("Error: host key mismatch: VM web1's guest at [127.0.0.2]:")
    assert f"offers host key ssh-ed25519 {seen}" in message and f"archq recorded ssh-ed25519 {expected}" in message


def test_a_recorded_key_of_a_type_the_guest_does_not_have_is_a_mismatch(api, guest, tmp_path):
    ecdsa = tmp_path / "ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(ecdsa)], check=True)
    api.vm["ssh_host_keys"] = [ecdsa.with_suffix(".pub").read_text()]
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "echo never")
    assert result.exit_code == 255
    assert "host key mismatch" in result.stderr and "offers no host key of those types" in result.stderr
    assert "ecdsa-sha2-nistp256 SHA256:" in result.stderr
    assert len(result.stderr.splitlines()) == 1  # paramiko's own log of the failed negotiation stays quiet


# --- what is missing before connecting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"addresses": []}, "VM web1 has no address yet (addresses refresh every few seconds after boot; try again)"),
        ({"addresses": [{"mac": "52:54:00:00:00:01", "ipv4": None, "ipv6": None, "source": "agent"}]},
         "VM web1 has no address yet"),
        ({"ssh_host_keys": []}, "the guest's SSH host keys of VM web1 are not known yet (archq reads them from the "
                                "console after first boot"),
        ({"ssh_host_keys": None}, "are not known yet"),
        ({"login_user": None}, "VM web1's image names no default user; give one with -l USER"),
        ({"state": "stopped"}, "VM web1 is stopped, not running; start it: archq vm start web1"),
    ],
)  # fmt: skip
def test_a_vm_that_cannot_be_reached_yet_is_one_clear_line(api, guest, changes, message):
    api.vm.update(changes)
    result = archq_ssh("web1", "-i", str(guest.client_key), *port_of(guest), "--", "true")
    assert result.exit_code == 255
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_key_the_guest_does_not_authorise_is_refused(api, guest, tmp_path):
    stranger = tmp_path / "stranger"
    keygen(stranger)
    result = archq_ssh("web1", "-i", str(stranger), *port_of(guest), "--", "true")
    assert result.exit_code == 255
    assert f"key refused by {guest.user}@[127.0.0.2]:{guest.port}: tried {stranger} (SHA256:" in result.stderr


def test_a_passphrase_protected_key_without_a_terminal_says_to_use_the_agent(api, guest, tmp_path):
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-phrase", "-f", str(locked)], check=True)
    result = archq_ssh("web1", "-i", str(locked), *port_of(guest), "--", "true")
    assert result.exit_code == 255
    assert "has a passphrase and there is no terminal to ask it on; add it to ssh-agent" in result.stderr
    assert "s3cret-phrase" not in result.output


def test_a_missing_key_file_is_named(api, guest, tmp_path):
    result = archq_ssh("web1", "-i", str(tmp_path / "nope"), *port_of(guest), "--", "true")
    assert result.exit_code == 255 and f"cannot read key {tmp_path / 'nope'}" in result.stderr


# --- through the hypervisor host -----------------------------------------------------------------------------


def test_jump_reaches_the_guest_through_its_host_verified_by_known_hosts(api, guest, jump_host, tmp_path):
    trust_jump_host(tmp_path / "known_hosts", jump_host)
    result = archq_ssh("web1", "--jump", "-i", str(guest.client_key), *port_of(guest), "--", "echo jumped; exit 7")
    assert (result.exit_code, result.stdout) == (7, "jumped\n"), result.output
    # The host logged the jump user's login; the guest saw the connection come from the host's forwarding.
    assert f"Accepted publickey for {jump_host.user} from 127.0.0.1" in jump_host.log()


def test_jump_key_and_user_can_be_given(api, guest, jump_host, tmp_path, monkeypatch):
    trust_jump_host(tmp_path / "known_hosts", jump_host)
    monkeypatch.setenv("ARCHQ_SSH_KEY", str(tmp_path / "no-such-key"))
    monkeypatch.setenv("ARCHQ_SSH_USER", "nobody-here")
    args = ["--jump", "--jump-user", jump_host.user, "--jump-key", str(jump_host.client_key)]
    result = archq_ssh("web1", *args, "-i", str(guest.client_key), *port_of(guest), "--", "echo ok")
    assert (result.exit_code, result.stdout) == (0, "ok\n"), result.output


def test_a_jump_host_missing_from_known_hosts_is_refused_with_the_trust_command(api, guest, jump_host, tmp_path):
    (tmp_path / "known_hosts").write_text("")
    result = archq_ssh("web1", "--jump", "-i", str(guest.client_key), *port_of(guest), "--", "true")
    assert result.exit_code == 255
    assert f"the jump host h1 ([127.0.0.1]:{jump_host.port}) has no host key in {tmp_path / 'known_hosts'}" in (
        result.stderr
    )
    assert f"run `archq host trust h1 --address 127.0.0.1 --port {jump_host.port}`" in result.stderr
    assert "Accepted publickey" not in jump_host.log()


def test_a_jump_host_offering_another_key_than_recorded_is_refused(api, guest, jump_host, tmp_path):
    other = tmp_path / "other_host_key"
    keygen(other)
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{jump_host.port} {other.with_suffix('.pub').read_text()}")
    result = archq_ssh("web1", "--jump", "-i", str(guest.client_key), *port_of(guest), "--", "true")
    assert result.exit_code == 255
    assert re.search(r"host key mismatch: the jump host h1 \(\S+\) offers host key ssh-ed25519 SHA256:", result.stderr)


def test_the_guests_key_is_checked_through_the_jump_too(api, guest, jump_host, tmp_path):
    trust_jump_host(tmp_path / "known_hosts", jump_host)
    api.vm["ssh_host_keys"] = [jump_host.host_key_line()]  # any key but the guest's
    result = archq_ssh("web1", "--jump", "-i", str(guest.client_key), *port_of(guest), "--", "true")
    assert result.exit_code == 255 and "host key mismatch: VM web1's guest" in result.stderr


def test_a_vm_whose_host_publishes_no_ssh_address_cannot_be_jumped_to(api, guest):
    api.hosts["h1"]["ssh"] = {"address": None, "port": 22}
    result = archq_ssh("web1", "--jump", "-i", str(guest.client_key), *port_of(guest), "--", "true")
    assert result.exit_code == 255
    assert "cannot jump to VM web1: its host h1 publishes no SSH address to jump through" in result.stderr


def test_no_jump_fails_when_the_guest_does_not_answer_directly(api, guest):
    api.vm["addresses"][0]["ipv4"] = "127.0.0.3"  # nothing listens there
    result = archq_ssh("web1", "--no-jump", "-i", str(guest.client_key), *port_of(guest), "--", "true")
    assert result.exit_code == 255
    assert f"cannot reach VM web1's guest at [127.0.0.3]:{guest.port} directly: Connection refused" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 (a netns)")
def test_a_guest_behind_its_hosts_nat_is_reached_through_the_host_by_itself(api, tmp_path):
    """The guest's address exists only inside the "hypervisor" network namespace; the client, outside, cannot
    reach it, and goes through the host's sshd, which can."""
    name = f"aqssh{os.getpid() % 100000}"
    with natted_network(name, os.getpid() % 250) as net:
        host = make_sshd(tmp_path / "nat-host", address=net.gateway, netns=net.netns)
        vm_guest = make_sshd(tmp_path / "nat-guest", address=net.private, netns=net.netns)
        with running_sshd(host), running_sshd(vm_guest):
            api.vm = vm_json(vm_guest)
            api.hosts["h1"] = {"name": "h1", "ssh": {"address": net.gateway, "port": host.port}}
            (tmp_path / "known_hosts").write_text(f"[{net.gateway}]:{host.port} {host.host_key_line()}\n")
            args = ["--jump-key", str(host.client_key), "--direct-timeout", "0.5", "-i", str(vm_guest.client_key)]
            result = archq_ssh("web1", *args, *port_of(vm_guest), "--", "echo $SSH_CONNECTION")
            assert result.exit_code == 0, result.output
            # "client address, client port, server address, server port", as the guest's sshd saw it.
            assert result.stdout.split()[2:] == [net.private, str(vm_guest.port)]
            assert "Accepted publickey" in host.log()

            direct_only = archq_ssh("web1", "--no-jump", *args, *port_of(vm_guest), "--", "true")
            assert direct_only.exit_code == 255 and "directly" in direct_only.stderr

            # Another machine at the same address on the client's side (192.168.122.0/24 is every libvirt's
            # default network): its key is not the guest's, so the command goes through the host instead.
            impostor = make_sshd(tmp_path / "impostor", address=net.private)
            subprocess.run(["ip", "addr", "add", f"{net.private}/32", "dev", "lo"], check=True)
            try:
                impostor.port = vm_guest.port
                with running_sshd(impostor):
                    detour = archq_ssh("web1", *args, *port_of(vm_guest), "--", "echo $SSH_CONNECTION")
                    assert detour.exit_code == 0, detour.output
                    assert detour.stdout.split()[2:] == [net.private, str(vm_guest.port)]
                    refused = archq_ssh("web1", "--no-jump", *args, *port_of(vm_guest), "--", "true")
                    assert refused.exit_code == 255
                    assert refused.stderr.startswith("Error: host key mismatch: VM web1's guest at")
                    assert "Accepted publickey" not in impostor.log()
            finally:
                subprocess.run(["ip", "addr", "del", f"{net.private}/32", "dev", "lo"], check=False)


# --- the functions under the command -------------------------------------------------------------------------


def test_plan_prefers_ipv4_then_ipv6_and_builds_the_guests_known_hosts(guest, tmp_path):
    vm = vm_json(guest, addresses=[
        {"mac": "52:54:00:00:00:01", "ipv4": None, "ipv6": "fd00::5", "source": "agent"},
        {"mac": "52:54:00:00:00:02", "ipv4": "192.168.122.5", "ipv6": None, "source": "lease"},
    ])  # fmt: skip
    target = plan_connection(vm, None, jump_user="root", jump_key=tmp_path / "k", known_hosts=tmp_path / "kh")
    assert (target.address, target.port, target.user, target.jump) == ("192.168.122.5", 22, guest.user, None)
    assert target.no_jump == "its host h1 is not known to the API"
    keys = known_hosts_for("192.168.122.5", [guest.host_key_line()])
    assert list(keys.keys()) == ["192.168.122.5"] and list(keys.lookup("192.168.122.5")) == ["ssh-ed25519"]
    only_v6 = plan_connection(vm_json(guest, addresses=vm["addresses"][:1]), None, jump_user="root",
                              jump_key=tmp_path / "k", known_hosts=tmp_path / "kh")  # fmt: skip
    assert only_v6.address == "fd00::5"


def test_link_local_addresses_are_skipped(guest, tmp_path):
    vm = vm_json(guest, addresses=[
        {"mac": "52:54:00:00:00:01", "ipv4": None, "ipv6": "fe80::5054:ff:fe00:1", "source": "agent"},
        {"mac": "52:54:00:00:00:01", "ipv4": None, "ipv6": "2001:db8::5", "source": "agent"},
    ])  # fmt: skip
    target = plan_connection(vm, None, jump_user="root", jump_key=tmp_path / "k", known_hosts=tmp_path / "kh")
    assert target.address == "2001:db8::5"


def test_a_passphrase_is_asked_for_an_encrypted_key_and_a_wrong_one_refused(tmp_path):
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-phrase", "-f", str(locked)], check=True)
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return "s3cret-phrase"

    key = load_key(locked, ask)
    assert key.get_name() == "ssh-ed25519" and prompts == [f"Enter passphrase for key '{locked}': "]
    with pytest.raises(VmSshError, match="wrong passphrase") as caught:
        load_key(locked, lambda _prompt: "not-it")
    assert "not-it" not in str(caught.value)


def test_open_session_reports_the_route_it_took(api, guest, jump_host, tmp_path):
    trust_jump_host(tmp_path / "known_hosts", jump_host)
    host = {"ssh": {"address": "127.0.0.1", "port": jump_host.port}}
    target = plan_connection(api.vm, host, port=guest.port, jump_user=jump_host.user,
                             jump_key=jump_host.client_key, known_hosts=tmp_path / "known_hosts")  # fmt: skip
    keys = login_keys([guest.client_key], None)
    with open_session(target, keys) as direct:
        assert direct.route == "direct" and direct.jump is None
    with open_session(target, keys, jump=True) as jumped:
        assert jumped.route == f"via h1 ([127.0.0.1]:{jump_host.port})"
        out = _Sink()
        assert run(jumped, "echo hi", None, out, _Sink()) == 0
        assert out.data == b"hi\n"
    with pytest.raises(VmSshError, match="no key to log in"):
        open_session(target, [])


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        pass
