"""The worker side of migration that needs no second host: destination URIs per transport, progress from
libvirt's job stats, what a domain needs on the target (read from its XML and its disks)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest

from queues.arch import Arch
from queues.config import Settings
from workers.domain_xml import DomainSpec, build_domain_xml
from workers.errors import WorkerError
from workers.migration import destination_uri, migration_endpoint, progress_of, read_plan


def test_destination_uris_follow_the_configured_transport():
    assert destination_uri(Settings(migration_transport="tcp"), "10.0.0.2") == "qemu+tcp://10.0.0.2/system"
    assert destination_uri(Settings(migration_transport="tls"), "fd00::2") == "qemu+tls://[fd00::2]/system"
    ssh = Settings(
        migration_transport="ssh",
        ssh_user="archq",
        ssh_port=2222,
        ssh_key_file=Path("/k"),
        known_hosts_file=Path("/kh"),
    )
    assert destination_uri(ssh, "b.example", 2222) == (
        "qemu+ssh://archq@b.example:2222/system?no_verify=0&keyfile=%2Fk"
    )
    with pytest.raises(WorkerError) as refused:
        destination_uri(Settings(migration_transport="rsh"), "b")
    assert refused.value.code == "migration_misconfigured"


def test_a_host_without_a_migration_address_takes_no_migrations():
    assert migration_endpoint(Settings()) == {}
    assert migration_endpoint(Settings(migration_address="10.0.0.2", shared_storage="nfs1")) == {
        "address": "10.0.0.2", "ssh_port": 22, "shared_storage": "nfs1",
    }  # fmt: skip


def test_progress_is_the_share_of_data_already_sent():
    stats = {"type": 2, "data_total": 1000, "data_remaining": 250, "disk_remaining": 0}
    assert progress_of(stats) == {"percent": 75.0, "bytes_remaining": 250, "bytes_total": 1000,
                                  "phase": "copying memory"}  # fmt: skip
    assert progress_of({**stats, "disk_remaining": 5})["phase"] == "copying storage"
    assert progress_of({"type": 2})["percent"] == 0.0


def test_the_plan_names_the_files_the_target_needs(tmp_path: Path):
    base, disk = tmp_path / "base.qcow2", tmp_path / "vm" / "disk.qcow2"
    disk.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(disk)], check=True)
    spec = DomainSpec(
        uuid=str(uuid.uuid4()), name="mig-plan", arch=Arch.AMD64, vcpus=1, memory_mib=128,
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img", cmdline="console=ttyS0",
        serial_log=tmp_path / "vm" / "console.log", domain_type="qemu",
    )  # fmt: skip
    xml = build_domain_xml(spec).replace(
        "<devices>",
        f"<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
        "<target dev='vda' bus='virtio'/></disk>",
    )
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(xml)
    try:
        plan = read_plan(dom.XMLDesc(0))
    finally:
        dom.undefine()
        conn.close()
    assert plan.memory_mib == 128 and plan.domain_type == "qemu"
    assert plan.artifacts == (spec.kernel, spec.initrd, base)
    assert plan.directories == (disk.parent,)
    (only,) = plan.disks
    assert (only.target, only.path, only.format, only.virtual_size) == ("vda", disk, "qcow2", 8 * 1024 * 1024)
    assert (only.backing, only.backing_format) == (base, "qcow2")


def test_a_running_domains_disks_are_read_from_libvirt_as_qemu_img_reads_them(tmp_path: Path):
    """A running domain's live XML shows its backing chain (`<backingStore>`, an empty one ending it) and libvirt
    knows the disk's virtual size: the plan needs no `qemu-img info` then, and says what qemu-img would say."""
    base, disk = tmp_path / "base.qcow2", tmp_path / "vm" / "disk.qcow2"
    disk.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(disk)], check=True)
    disk_xml = (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}' index='2'/>"
        "{chain}<target dev='vda' bus='virtio'/></disk>"
    )
    live_chain = (
        f"<backingStore type='file' index='3'><format type='qcow2'/><source file='{base}'/><backingStore/>"
        "</backingStore>"
    )
    xml = build_domain_xml(
        DomainSpec(
            uuid=str(uuid.uuid4()), name="mig-live", arch=Arch.AMD64, vcpus=1, memory_mib=128, kernel=None,
            initrd=None, cmdline="", serial_log=tmp_path / "vm" / "console.log", domain_type="qemu",
        )
    )  # fmt: skip
    asked: list[Path] = []

    def capacity(path: Path) -> int:
        asked.append(path)
        return 8 * 1024 * 1024

    from_libvirt = read_plan(xml.replace("<devices>", "<devices>" + disk_xml.format(chain=live_chain)), capacity)
    from_qemu_img = read_plan(xml.replace("<devices>", "<devices>" + disk_xml.format(chain="")), capacity)
    assert asked == [disk], "libvirt is asked only where its XML shows the chain"
    assert from_libvirt == from_qemu_img
    assert from_libvirt.disks[0].backing == base and from_libvirt.artifacts == (base,)
