"""Every TCG CPU configuration archq knows (queues/emulation.py), with archq's translation cache, is accepted by
the QEMU driver of the real libvirtd and reads back from the defined domain as the name the VM shows in
`cpu_mode_effective` (pauth-impdef travels in the qemu namespace's command line, which the test driver drops).
Defined only, never started: bench/emulation.py boots each one."""

from __future__ import annotations

import uuid
from pathlib import Path

import libvirt
import pytest

from queues.emulation import TB_CACHE_MIB, TCG_CPUS
from tests.support.domains import SYSTEM
from workers.domain_xml import DomainSpec, build_domain_xml, cpu_mode_in

pytestmark = pytest.mark.libvirtd


@pytest.mark.parametrize("cpu", [c for cpus in TCG_CPUS.values() for c in cpus.values()], ids=lambda c: c.name)
def test_qemu_driver_keeps_the_tcg_cpu_and_the_tb_cache(cpu, tmp_path: Path):
    spec = DomainSpec(
        uuid=str(uuid.uuid4()), name=f"tcg-cpu-{uuid.uuid4().hex[:8]}", arch=cpu.arch, vcpus=1, memory_mib=128,
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img", cmdline="", serial_log=tmp_path / "log",
        domain_type="qemu", tcg_cpu=cpu, tb_cache_mib=TB_CACHE_MIB,
    )  # fmt: skip
    conn = libvirt.open(SYSTEM)
    try:
        dom = conn.defineXML(build_domain_xml(spec))
        try:
            kept = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            assert cpu_mode_in(kept) == cpu.name
            assert f"<tb-cache unit='KiB'>{TB_CACHE_MIB * 1024}</tb-cache>" in kept
        finally:
            dom.undefine()
    finally:
        conn.close()
