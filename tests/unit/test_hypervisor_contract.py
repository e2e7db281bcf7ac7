"""The promises of `workers.hypervisor.Hypervisor`, held by the real `LibvirtHypervisor` (on libvirt's test
driver) and by the in-memory fake the logic tests use: if one of them changes, the other must follow."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues.arch import Arch
from tests.support.fake_hypervisor import FakeHypervisor
from workers.domain_xml import DomainSpec, build_domain_xml
from workers.errors import WorkerError
from workers.hypervisor import Hypervisor, LibvirtHypervisor


@pytest.fixture(params=["fake", "libvirt-test-driver"])
def hypervisor(request: pytest.FixtureRequest) -> Iterator[Hypervisor]:
    made: Hypervisor = FakeHypervisor() if request.param == "fake" else LibvirtHypervisor("test:///default")
    before = {d.uuid for d in made.list_domains()}
    yield made
    # Every connection to test:///default in this process shares one state: leave it as it was.
    for domain in made.list_domains():
        if domain.uuid not in before:
            made.remove(domain.uuid)
    made.close()


def domain_xml(name: str = "contract") -> tuple[str, str]:
    vm_id = str(uuid.uuid4())
    spec = DomainSpec(
        uuid=vm_id, name=f"{name}-{vm_id[:8]}", arch=Arch.AMD64, vcpus=1, memory_mib=64,
        kernel=Path("/images/vmlinuz"), initrd=Path("/images/initrd.img"), cmdline="console=ttyS0",
        serial_log=Path("/vms/x/console.log"), domain_type="qemu", disk=Path("/vms/x/disk.qcow2"),
    )  # fmt: skip
    return vm_id, build_domain_xml(spec)


def code_of(call) -> str:
    with pytest.raises(WorkerError) as failed:
        call()
    return failed.value.code


def test_ensure_running_is_idempotent_by_uuid(hypervisor: Hypervisor):
    vm_id, xml = domain_xml()
    first = hypervisor.ensure_running(vm_id, xml)
    again = hypervisor.ensure_running(vm_id, xml)
    assert first == again and first.state == "running" and first.name.startswith("archq-contract-")
    assert [d.uuid for d in hypervisor.list_domains()].count(vm_id) == 1
    assert hypervisor.is_active(vm_id) is True
    assert "<uuid>" + vm_id in hypervisor.xml_desc(vm_id)


def test_lifecycle_states(hypervisor: Hypervisor):
    vm_id, xml = domain_xml()
    hypervisor.ensure_running(vm_id, xml)
    stopped, forced = hypervisor.stop(vm_id, timeout_s=5)
    assert (stopped.state, forced) == ("stopped", False)
    assert hypervisor.is_active(vm_id) is False
    assert hypervisor.stop(vm_id, timeout_s=5)[0].state == "stopped"
    assert hypervisor.reboot(vm_id).state == "running"
    assert hypervisor.start(vm_id).state == "running"
    assert hypervisor.remove(vm_id) is True
    assert hypervisor.remove(vm_id) is False


def test_a_missing_domain(hypervisor: Hypervisor):
    vm_id = str(uuid.uuid4())
    assert hypervisor.domain(vm_id) is None and hypervisor.is_active(vm_id) is None
    assert code_of(lambda: hypervisor.start(vm_id)) == "domain_missing"
    assert code_of(lambda: hypervisor.xml_desc(vm_id)) == "domain_missing"
    assert code_of(lambda: hypervisor.migrate(vm_id, "test:///default", live=True)) == "domain_missing"
    assert hypervisor.delete_snapshot(vm_id, "s") is False
    assert hypervisor.job_stats(vm_id) is None and hypervisor.job_running(vm_id) is False


def test_snapshots(hypervisor: Hypervisor):
    vm_id, xml = domain_xml()
    hypervisor.ensure_running(vm_id, xml)
    assert hypervisor.snapshot(vm_id, "s1") is None
    taken = hypervisor.create_internal_snapshot(vm_id, "s1", "archq job 1", memory=True)
    assert (taken.name, taken.description, taken.memory, taken.state) == ("s1", "archq job 1", True, "running")
    assert hypervisor.snapshot(vm_id, "s1") == taken
    assert [s.name for s in hypervisor.snapshots(vm_id)] == ["s1"]
    assert code_of(lambda: hypervisor.create_internal_snapshot(vm_id, "s1", "x", memory=True)) == "snapshot_failed"
    hypervisor.stop(vm_id, timeout_s=5)
    assert hypervisor.revert_snapshot(vm_id, "s1").state == "running"
    assert code_of(lambda: hypervisor.revert_snapshot(vm_id, "nope")) == "snapshot_missing"
    assert hypervisor.delete_snapshot(vm_id, "s1") is True
    assert hypervisor.delete_snapshot(vm_id, "s1") is False
    assert hypervisor.snapshots(vm_id) == []


def test_no_job_runs_on_an_idle_domain(hypervisor: Hypervisor):
    vm_id, xml = domain_xml()
    hypervisor.ensure_running(vm_id, xml)
    assert hypervisor.job_running(vm_id) is False
    assert hypervisor.job_stats(vm_id) is None and hypervisor.job_progress(vm_id) is None
