"""The two-host lab (tests/support/twohosts.py) with raw libvirt-python and paramiko: two distinct hosts,
a live peer-to-peer migration of the tiny guest from h1 to h2 and back over SSH, and strict host key
checking against the hosts' sshd."""

from __future__ import annotations

import os
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import paramiko
import pytest

from queues.arch import Arch
from tests.support.services import wait_for
from tests.support.twohosts import LabHost, lab_available, two_hosts
from workers.domain_xml import DomainSpec, build_domain_xml, domain_name
from workers.guest.tiny import ensure_tiny_guest, marker_line, ticks_in

pytestmark = pytest.mark.libvirtd

TINY_CACHE = Path(os.environ.get("ARCHQ_TEST_CACHE", "/var/tmp/archq-test-cache")) / "tiny"
MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    | libvirt.VIR_MIGRATE_AUTO_CONVERGE
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabHost, LabHost]]:
    reason = lab_available()
    if reason:
        pytest.fail(f"two-host lab unavailable: {reason}")
    started = time.monotonic()
    with two_hosts(tmp_path_factory.mktemp("lab")) as hosts:
        print(f"\ntwo-host lab setup: {time.monotonic() - started:.2f} s")
        yield hosts
        stopping = time.monotonic()
    print(f"\ntwo-host lab teardown: {time.monotonic() - stopping:.2f} s")


def host_uuid(conn: libvirt.virConnect) -> str:
    return ET.fromstring(conn.getCapabilities()).findtext("host/uuid") or ""


def ticks(path: Path) -> list[int]:
    if not path.exists():
        return []
    return ticks_in(path.read_text(errors="replace"))


def located(host: LabHost, name: str) -> bool | None:
    """True if the domain runs on the host, False if it is defined there but not running, None if absent."""
    conn = libvirt.open(host.uri)
    try:
        # listAllDomains, not lookupByName: a miss is an expected answer here, not an error to print.
        found = [dom for dom in conn.listAllDomains() if dom.name() == name]
        return bool(found[0].isActive()) if found else None
    finally:
        conn.close()


@dataclass(frozen=True)
class Migration:
    name: str
    seconds: float
    h1_console: Path
    h2_console: Path


@pytest.fixture(scope="module")
def migrated(lab: tuple[LabHost, LabHost]) -> Iterator[Migration]:
    """The tiny guest booted on h1, then live-migrated to h2 (peer to peer over qemu+tcp)."""
    h1, h2 = lab
    guest = ensure_tiny_guest(Arch.AMD64, TINY_CACHE)
    vm = "lab-migrant"
    # Direct kernel boot: the destination opens the kernel, the initrd and the serial log at the same
    # paths, so both hosts get their own copies (storage is not shared) before the migration.
    for host in lab:
        for image in (guest.kernel, guest.initrd):
            shutil.copyfile(image, host.data_dir / "images" / image.name)
        (host.data_dir / "vms" / vm).mkdir(mode=0o755)
    spec = DomainSpec(
        uuid=str(uuid.uuid4()),
        name=vm,
        arch=Arch.AMD64,
        vcpus=1,
        memory_mib=128,
        kernel=h1.in_host(h1.data_dir / "images" / guest.kernel.name),
        initrd=h1.in_host(h1.data_dir / "images" / guest.initrd.name),
        cmdline=guest.cmdline,
        serial_log=h1.host_data_dir / "vms" / vm / "console.log",
        domain_type="qemu",
    )
    h1_console = h1.data_dir / "vms" / vm / "console.log"
    h2_console = h2.data_dir / "vms" / vm / "console.log"

    src = libvirt.open(h1.uri)
    try:
        dom = src.defineXML(build_domain_xml(spec))
        dom.create()
        wait_for(
            lambda: marker_line(Arch.AMD64) in h1_console.read_text(errors="replace") if h1_console.exists() else False,
            timeout=90,
            what="the tiny guest's boot marker on h1",
        )
        # A tick or two first, so that the counter proves the guest's memory travelled with it.
        wait_for(lambda: len(ticks(h1_console)) >= 2, timeout=30, what="the tiny guest ticking on h1")
        started = time.monotonic()
        dom.migrateToURI3(h2.migration_uri, {}, MIGRATE_FLAGS)
        seconds = time.monotonic() - started
    finally:
        src.close()
    print(f"\nlive migration h1 -> h2 (qemu+tcp, peer to peer): {seconds:.2f} s")
    yield Migration(domain_name(vm), seconds, h1_console, h2_console)
    # Teardown of the lab kills QEMU anyway; this only keeps the domain from outliving a reused lab.
    for host in lab:
        conn = libvirt.open(host.uri)
        try:
            for dom in conn.listAllDomains():
                if dom.name() == domain_name(vm):
                    if dom.isActive():
                        dom.destroy()
                    if dom.isPersistent():
                        dom.undefine()
        finally:
            conn.close()


def test_both_hosts_answer_with_distinct_host_uuids(lab: tuple[LabHost, LabHost]) -> None:
    uuids, hostnames = [], []
    for host in lab:
        conn = libvirt.open(host.uri)
        try:
            uuids.append(host_uuid(conn))
            hostnames.append(conn.getHostname())
            # A host of its own: the root libvirtd's domains are not visible here.
            root_names = {d.name() for d in libvirt.open("qemu:///system").listAllDomains()}
            assert not root_names & {d.name() for d in conn.listAllDomains()}
        finally:
            conn.close()
    assert uuids == [lab[0].host_uuid, lab[1].host_uuid]
    assert uuids[0] != uuids[1]
    assert hostnames == ["h1", "h2"]


def test_tiny_guest_live_migrates_from_h1_to_h2(lab: tuple[LabHost, LabHost], migrated: Migration) -> None:
    h1, h2 = lab
    assert located(h2, migrated.name) is True
    assert located(h1, migrated.name) is None  # UNDEFINE_SOURCE
    conn = libvirt.open(h2.uri)
    try:
        assert conn.lookupByName(migrated.name).isPersistent()  # PERSIST_DEST
    finally:
        conn.close()
    # The guest carries on counting on h2 (its serial log there is h2's own file): a live migration,
    # not a reboot, which would print the marker and start again from 1.
    last_on_h1 = ticks(migrated.h1_console)[-1]
    wait_for(lambda: ticks(migrated.h2_console), timeout=30, what="the guest ticking on h2")
    assert ticks(migrated.h2_console)[0] >= last_on_h1
    assert marker_line(Arch.AMD64) not in migrated.h2_console.read_text(errors="replace")
    assert migrated.seconds < 30


def ssh_client(known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def test_paramiko_reaches_h2_with_strict_host_keys(
    lab: tuple[LabHost, LabHost], migrated: Migration, tmp_path: Path
) -> None:
    h1, h2 = lab
    client = ssh_client(h2.known_hosts_path)
    try:
        client.connect(
            h2.address,
            port=h2.ssh_port,
            username="root",
            key_filename=str(h2.ssh_key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        _, stdout, stderr = client.exec_command("virsh -c qemu:///system list --name", timeout=30)
        out = stdout.read().decode()
        assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    finally:
        client.close()
    # sshd runs inside h2's namespaces, so its qemu:///system is h2's libvirtd.
    assert migrated.name in out.split()

    # h1's genuine host key recorded under h2's address: a changed host key must be refused.
    h1_key = next(line for line in h1.known_hosts_path.read_text().splitlines() if line.startswith(h1.address))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{h2.address} {' '.join(h1_key.split()[1:3])}\n")
    client = ssh_client(wrong)
    try:
        with pytest.raises(paramiko.BadHostKeyException):
            client.connect(
                h2.address,
                port=h2.ssh_port,
                username="root",
                key_filename=str(h2.ssh_key_path),
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
    finally:
        client.close()


def test_guest_migrates_back_to_h1_over_ssh(lab: tuple[LabHost, LabHost], migrated: Migration) -> None:
    """Host to host over qemu+ssh: h2's libvirtd logs into h1 with the key and known_hosts in h2's /root/.ssh.
    Runs after the paramiko test (file order), which expects the guest on h2."""
    h1, h2 = lab
    conn = libvirt.open(h2.uri)
    try:
        started = time.monotonic()
        conn.lookupByName(migrated.name).migrateToURI3(h1.ssh_migration_uri, {}, MIGRATE_FLAGS)
        seconds = time.monotonic() - started
    finally:
        conn.close()
    print(f"\nlive migration h2 -> h1 (qemu+ssh, peer to peer): {seconds:.2f} s")
    assert located(h1, migrated.name) is True
    assert located(h2, migrated.name) is None
    last_on_h2 = ticks(migrated.h2_console)[-1]
    wait_for(lambda: any(t > last_on_h2 for t in ticks(migrated.h1_console)), timeout=30, what="ticks back on h1")
