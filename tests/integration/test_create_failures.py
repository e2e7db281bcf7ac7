"""A create that fails leaves nothing of the VM on its host (test driver: a libvirt domain of the same name
and another UUID, defined behind archq's back, makes the define fail)."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import libvirt

from queues.arch import Arch
from tests.support.api import create_vm, wait_host, wait_job
from workers.domain_xml import DomainSpec, build_domain_xml


def test_a_failed_define_removes_the_vms_disk_and_directory(client, conductor, hypervisor_worker, settings):
    squatter = DomainSpec(
        uuid=str(uuid.uuid4()), name="taken", arch=Arch.AMD64, vcpus=1, memory_mib=64, kernel=Path("/k"),
        initrd=Path("/i"), cmdline="", serial_log=Path("/dev/null"), domain_type="qemu",
    )  # fmt: skip
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(build_domain_xml(squatter))
    try:
        with hypervisor_worker():
            wait_host(client, "amd64-host")
            accepted = create_vm(client, name="taken")
            job = wait_job(client, accepted["job"]["id"])
            assert job["state"] == "failed" and job["error"]["code"] == "domain_start_failed"
            assert "nothing was left on the host" in job["error"]["message"]
            assert not (settings.data_dir / "vms" / accepted["vm"]["id"]).exists()
            assert dom.UUIDString() == squatter.uuid and conn.lookupByName("archq-taken").UUIDString() == squatter.uuid
    finally:
        # The worker fixture removes every archq-* domain of the test driver when it stops.
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
        conn.close()
