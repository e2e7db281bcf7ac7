"""Each pre-check a source runs on a migration target, against a real lab host's sshd and libvirtd, fails
with its own code; what passes leaves the target ready (artifacts copied and verified, directories made)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from queues.config import Settings
from tests.support.twohosts import LabHost, lab_available, two_hosts
from workers import target_checks
from workers.errors import WorkerError
from workers.migration import open_destination
from workers.ssh import SshError, connect, pooled

pytestmark = pytest.mark.libvirtd


@pytest.fixture(scope="module")
def h2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHost]:
    reason = lab_available()
    if reason:
        pytest.fail(f"two-host lab unavailable: {reason}")
    with two_hosts(tmp_path_factory.mktemp("checks"), prefix="migchk") as (_h1, h2):
        yield h2


@pytest.fixture
def ssh(h2: LabHost) -> Iterator[tuple[paramiko.SSHClient, paramiko.SFTPClient]]:
    client = connect(h2.address, h2.ssh_port, "root", h2.ssh_key_path, h2.known_hosts_path)
    sftp = client.open_sftp()
    yield client, sftp
    client.close()


def code_of(call) -> str:
    with pytest.raises((WorkerError, SshError)) as failed:
        call()
    return failed.value.code


def test_ssh_refusals_have_their_own_codes(h2: LabHost, tmp_path: Path):
    key, known = str(h2.ssh_key_path), str(h2.known_hosts_path)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    assert code_of(lambda: connect(h2.address, 22, "root", key, str(empty))) == "ssh_host_unknown"
    other = tmp_path / "other_key"  # a key h2 never authorised
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    assert code_of(lambda: connect(h2.address, 22, "root", str(other), known)) == "ssh_auth_failed"
    assert code_of(lambda: connect(h2.address, 2, "root", key, known, timeout=2)) == "ssh_unreachable"


def test_memory_disk_and_emulator_checks_fail_with_their_codes(h2: LabHost, ssh):
    client, sftp = ssh
    target_checks.check_memory(sftp, "h2", 64)
    assert code_of(lambda: target_checks.check_memory(sftp, "h2", 1 << 30)) == "target_low_memory"
    target_checks.check_disk(client, sftp, "h2", h2.host_data_dir / "vms" / "new", 1 << 20)
    assert code_of(lambda: target_checks.check_disk(client, sftp, "h2", h2.host_data_dir, 1 << 60)) == (
        "target_low_disk"
    )
    target_checks.check_emulator(sftp, "h2", "/usr/bin/qemu-system-x86_64")
    assert code_of(lambda: target_checks.check_emulator(sftp, "h2", "/usr/bin/qemu-system-z80")) == (
        "target_emulator_missing"
    )


def test_artifacts_are_copied_when_missing_and_never_replaced_when_different(h2: LabHost, ssh):
    client, sftp = ssh
    # Artifacts live at the same path on both hosts. /run is the one tree a lab host does not share with this
    # namespace (a private tmpfs there), so a file here is missing on h2 until it is copied.
    artifact = Path(f"/run/archq-mig-test-{time.monotonic_ns()}") / "kernel"
    artifact.parent.mkdir()
    artifact.write_bytes(b"archq" * 1000)
    on_h2 = Path(f"/proc/{h2.pid}/root") / artifact.relative_to("/")
    try:
        missing = target_checks.missing_artifacts(client, sftp, "h2", (artifact,))
        assert missing == [(artifact, target_checks.sha256(artifact))]
        target_checks.copy_artifacts(client, sftp, "h2", missing)
        assert on_h2.read_bytes() == artifact.read_bytes()
        assert target_checks.missing_artifacts(client, sftp, "h2", (artifact,)) == []
        on_h2.write_bytes(b"something else")
        assert code_of(lambda: target_checks.missing_artifacts(client, sftp, "h2", (artifact,))) == (
            "target_artifact_mismatch"
        )
    finally:
        artifact.unlink()
        artifact.parent.rmdir()


def test_a_disk_that_cannot_take_its_place_on_the_target_leaves_no_partial_file(h2: LabHost, ssh):
    client, sftp = ssh
    # The same path on both hosts (/run is private to h2): a disk here; on h2 a directory, so the upload
    # succeeds and the rename into place cannot.
    disk_path = Path(f"/run/archq-mig-test-{time.monotonic_ns()}") / "disk.qcow2"
    disk_path.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk_path), "8M"], check=True)
    on_h2 = Path(f"/proc/{h2.pid}/root") / disk_path.relative_to("/")
    on_h2.mkdir(parents=True)
    disk = target_checks.Disk("vda", disk_path, "qcow2", 8 << 20, disk_path.stat().st_size)
    try:
        assert code_of(lambda: target_checks.precreate_disks(client, sftp, "h2", (disk,))) == "target_disk_failed"
        assert code_of(lambda: target_checks.copy_disks(sftp, "h2", (disk,))) == "target_disk_failed"
        assert [p.name for p in on_h2.parent.iterdir()] == ["disk.qcow2"], "no partial file left on h2"
    finally:
        on_h2.rmdir()
        on_h2.parent.rmdir()
        disk_path.unlink()
        disk_path.parent.rmdir()


def test_an_unreachable_target_libvirt_is_its_own_code(h2: LabHost):
    # Nothing listens for TLS on the lab hosts.
    assert code_of(lambda: open_destination(f"qemu+tls://{h2.address}/system", "h2")) == "target_libvirt_unreachable"


def test_a_kept_connection_is_dropped_when_the_host_key_no_longer_matches(h2: LabHost, tmp_path: Path):
    known = tmp_path / "known_hosts"
    known.write_text(h2.known_hosts_path.read_text())
    settings = Settings(ssh_key_file=h2.ssh_key_path, known_hosts_file=known)

    def kept() -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        return pooled(h2.address, 22, settings.ssh_user, settings.ssh_key_file, settings.known_hosts_file)

    first = kept()
    assert kept() is first
    lines = known.read_text().splitlines()
    other = next(line for line in lines if not line.startswith(h2.address))  # h1's key
    known.write_text(f"{h2.address} {' '.join(other.split()[1:3])}\n")
    assert code_of(kept) == "ssh_host_key_changed"
