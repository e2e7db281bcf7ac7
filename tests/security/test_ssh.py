"""workers/ssh.py against a real sshd on loopback: a recorded key connects, an unknown or changed key is
refused with a clear error, only the given key authenticates; `archq host trust` records a key only once
the fingerprint is confirmed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from queues.ssh_keys import fingerprint
from tests.support.sshd import SSHD, keygen, make_sshd, running_sshd
from workers.ssh import SshError, connect, fetch_host_key, record_host_key, recorded_key
from workers.ssh_commands import trust

pytestmark = pytest.mark.skipif(not Path(SSHD).exists(), reason="needs openssh-server")


@pytest.fixture
def sshd(tmp_path):
    with running_sshd(make_sshd(tmp_path / "sshd")) as server:
        yield server


def connect_to(sshd, known_hosts: Path, key: Path | None = None):
    return connect("127.0.0.1", sshd.port, sshd.user, key or sshd.client_key, known_hosts, timeout=5)


def test_a_recorded_host_key_connects_and_runs_a_command(sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    record_host_key(known_hosts, "127.0.0.1", sshd.port, fetch_host_key("127.0.0.1", sshd.port))
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert f"[127.0.0.1]:{sshd.port}" in known_hosts.read_text()
    client = connect_to(sshd, known_hosts)
    try:
        _stdin, stdout, _stderr = client.exec_command("echo archq-ok")
        assert stdout.read().strip() == b"archq-ok"
    finally:
        client.close()


def test_an_unknown_host_is_refused(sshd, tmp_path):
    with pytest.raises(SshError) as caught:
        connect_to(sshd, tmp_path / "empty_known_hosts")
    assert caught.value.code == "ssh_host_unknown"
    assert "archq host trust" in caught.value.message


def test_a_changed_host_key_is_refused(tmp_path):
    server = make_sshd(tmp_path / "sshd")
    known_hosts = tmp_path / "known_hosts"
    with running_sshd(server):
        old = fetch_host_key("127.0.0.1", server.port)
        record_host_key(known_hosts, "127.0.0.1", server.port, old)
    server.regenerate_host_key()
    with running_sshd(server), pytest.raises(SshError) as caught:
        connect_to(server, known_hosts)
    assert caught.value.code == "ssh_host_key_changed"
    assert fingerprint(old) in caught.value.message


def test_a_key_the_host_does_not_authorise_is_refused(sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    record_host_key(known_hosts, "127.0.0.1", sshd.port, fetch_host_key("127.0.0.1", sshd.port))
    stranger = tmp_path / "stranger"
    keygen(stranger)
    with pytest.raises(SshError) as caught:
        connect_to(sshd, known_hosts, key=stranger)
    assert caught.value.code == "ssh_auth_failed"


def test_nothing_listening_is_unreachable(tmp_path):
    from tests.support.services import free_port

    with pytest.raises(SshError) as caught:
        connect("127.0.0.1", free_port(), "root", tmp_path / "none", tmp_path / "known_hosts", timeout=2)
    assert caught.value.code == "ssh_unreachable"


def test_host_trust_records_only_after_confirmation(sshd, tmp_path, monkeypatch):
    known_hosts = tmp_path / "data" / "known_hosts"
    monkeypatch.setenv("ARCHQ_KNOWN_HOSTS", str(known_hosts))
    offered = fingerprint(fetch_host_key("127.0.0.1", sshd.port))
    args = ["h1", "--address", "127.0.0.1", "--port", str(sshd.port)]

    refused = CliRunner().invoke(trust, args, input="n\n")
    assert refused.exit_code != 0 and offered in refused.output
    assert recorded_key(known_hosts, "127.0.0.1", sshd.port) is None

    accepted = CliRunner().invoke(trust, args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert recorded_key(known_hosts, "h1", sshd.port) is not None
    connect_to(sshd, known_hosts).close()

    again = CliRunner().invoke(trust, [*args, "--yes"])
    assert again.exit_code == 0 and "already trusted" in again.output


def test_host_trust_warns_about_a_changed_key_and_replaces_it_only_when_told(tmp_path, monkeypatch):
    server = make_sshd(tmp_path / "sshd")
    known_hosts = tmp_path / "known_hosts"
    monkeypatch.setenv("ARCHQ_KNOWN_HOSTS", str(known_hosts))
    args = ["h1", "--address", "127.0.0.1", "--port", str(server.port)]
    with running_sshd(server):
        old = fetch_host_key("127.0.0.1", server.port)
        assert CliRunner().invoke(trust, [*args, "--yes"]).exit_code == 0
    server.regenerate_host_key()
    with running_sshd(server):
        kept = CliRunner().invoke(trust, args, input="n\n")
        assert kept.exit_code != 0 and "WARNING" in kept.output and fingerprint(old) in kept.output
        assert recorded_key(known_hosts, "127.0.0.1", server.port).asbytes() == old.asbytes()
        unattended = CliRunner().invoke(trust, [*args, "--yes"])
        assert unattended.exit_code != 0 and "--replace" in unattended.output
        assert recorded_key(known_hosts, "127.0.0.1", server.port).asbytes() == old.asbytes()
        replaced = CliRunner().invoke(trust, [*args, "--yes", "--replace"])
        assert replaced.exit_code == 0, replaced.output
        connect_to(server, known_hosts).close()
