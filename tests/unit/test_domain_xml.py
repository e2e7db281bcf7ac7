"""Domain XML is built with an XML library: right for each arch and accelerator, and no name or path can
break or inject into it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from queues.arch import Arch
from queues.emulation import TB_CACHE_MIB, TCG_CPUS, tcg_cpu
from workers.domain_xml import QEMU_NS, DomainSpec, as_native, build_domain_xml, cpu_mode_in, firmware_of


def spec(**overrides) -> DomainSpec:
    values = dict(
        uuid="6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11", name="demo", arch=Arch.AMD64, vcpus=2, memory_mib=256,
        kernel=Path("/images/vmlinuz"), initrd=Path("/images/initrd.img"), cmdline="console=ttyS0",
        serial_log=Path("/vms/x/console.log"), domain_type="qemu",
    )  # fmt: skip
    values.update(overrides)
    return DomainSpec(**values)


def test_amd64_tcg_guest():
    root = ET.fromstring(build_domain_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "archq-demo"
    assert root.findtext("uuid") == "6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11"
    assert root.find("os/type").attrib == {"arch": "x86_64", "machine": "q35"}
    assert root.find("cpu").get("mode") == "custom" and root.findtext("cpu/model") == "qemu64"
    serial = root.find("devices/serial")
    assert serial.get("type") == "pty" and serial.find("log").get("file") == "/vms/x/console.log"
    assert root.findtext("memory") == "256" and root.findtext("vcpu") == "2"


def test_arm64_tcg_guest_uses_virt_and_a_model_tcg_runs():
    root = ET.fromstring(build_domain_xml(spec(arch=Arch.ARM64, cmdline="console=ttyAMA0")))
    assert root.find("os/type").attrib == {"arch": "aarch64", "machine": "virt"}
    assert root.findtext("cpu/model") == "cortex-a57"


@pytest.mark.parametrize("mode", ["host-model", "host-passthrough"])
def test_accelerated_guest_gets_the_cpu_mode_it_asked_for(mode):
    root = ET.fromstring(build_domain_xml(spec(domain_type="kvm", cpu_mode=mode)))
    assert root.get("type") == "kvm" and root.find("cpu").attrib == {"mode": mode}
    assert cpu_mode_in(build_domain_xml(spec(domain_type="kvm", cpu_mode=mode))) == mode


@pytest.mark.parametrize("arch", list(Arch))
def test_tcg_guest_gets_a_named_model_whatever_was_asked(arch):
    xml = build_domain_xml(spec(arch=arch, domain_type="qemu", cpu_mode="host-passthrough"))
    assert ET.fromstring(xml).find("cpu").get("mode") == "custom"
    assert cpu_mode_in(xml) == {Arch.AMD64: "custom:qemu64", Arch.ARM64: "custom:cortex-a57"}[arch]


def test_direct_boot_guest_has_its_state_disk_on_virtio():
    built = spec(disk=Path("/vms/x/disk.qcow2"))
    root = ET.fromstring(build_domain_xml(built))
    disk = root.find("devices/disk")
    assert disk.attrib == {"type": "file", "device": "disk"}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert disk.find("source").attrib == {"file": "/vms/x/disk.qcow2"}
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert root.findtext("os/kernel") == "/images/vmlinuz" and firmware_of(built) == "direct"


def test_arm64_disk_guest_boots_uefi_with_its_nvram_in_the_vm_directory():
    built = spec(
        arch=Arch.ARM64, kernel=None, initrd=None, cmdline="", disk=Path("/vms/x/disk.qcow2"),
        nvram=Path("/vms/x/nvram.fd"),
    )  # fmt: skip
    root = ET.fromstring(build_domain_xml(built))
    assert root.find("os").get("firmware") == "efi"
    assert root.findtext("os/nvram") == "/vms/x/nvram.fd"
    assert root.find("os/kernel") is None and root.find("os/boot").get("dev") == "hd"
    assert firmware_of(built) == "uefi"
    # Unsigned bootloaders run: the firmware libvirt picks has Secure Boot off.
    assert [f.attrib for f in root.findall("os/firmware/feature")] == [{"enabled": "no", "name": "secure-boot"}]


def test_amd64_disk_guest_boots_from_its_disk_with_the_bios():
    built = spec(kernel=None, initrd=None, cmdline="", disk=Path("/vms/x/disk.qcow2"), disk_format="raw")
    root = ET.fromstring(build_domain_xml(built))
    assert root.find("os").get("firmware") is None and root.find("os/boot").get("dev") == "hd"
    assert root.find("devices/disk/driver").get("type") == "raw"
    assert firmware_of(built) == "bios"


@pytest.mark.parametrize("hostile", ["<evil/>", "a&b", "x'y", 'q"r', "]]><inject>", "</name><devices/>"])
def test_metacharacters_in_names_and_paths_stay_text(hostile):
    xml = build_domain_xml(spec(name=hostile, cmdline=hostile, serial_log=Path(f"/vms/{hostile}/log")))
    root = ET.fromstring(xml)
    assert root.findtext("name") == f"archq-{hostile}"
    assert root.findtext("os/cmdline") == hostile
    assert root.find("devices/serial/log").get("file") == f"/vms/{hostile}/log"
    assert len(root.findall("devices")) == 1 and root.find("inject") is None


def test_libvirt_accepts_the_xml():
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(build_domain_xml(spec(name="xml-check", disk=Path("/vms/x/disk.qcow2"))))
        assert dom.UUIDString() == "6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11"
        dom.undefine()
    finally:
        conn.close()


def test_a_vm_disk_is_qcow2_on_virtio():
    root = ET.fromstring(build_domain_xml(spec(disk=Path("/vms/x/disk.qcow2"))))
    disk = root.find("devices/disk")
    assert disk.attrib == {"type": "file", "device": "disk"}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert disk.find("source").get("file") == "/vms/x/disk.qcow2"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert ET.fromstring(build_domain_xml(spec())).find("devices/disk") is None


@pytest.mark.parametrize("cpu", [c for cpus in TCG_CPUS.values() for c in cpus.values()], ids=lambda c: c.name)
def test_every_tcg_cpu_reads_back_as_its_name(cpu):
    """`cpu_mode_effective` is read from the defined domain's XML (tests/integration/test_tcg_cpus_qemu.py reads
    it back from the QEMU driver; the test driver drops the qemu namespace)."""
    built = build_domain_xml(spec(name=f"tcg-{cpu.arch}", arch=cpu.arch, tcg_cpu=cpu))
    assert cpu_mode_in(built) == cpu.name


def test_pauth_impdef_reaches_qemu_as_a_global_of_the_max_cpu():
    cpu = tcg_cpu("maximum,pauth-impdef=on", Arch.ARM64)
    root = ET.fromstring(build_domain_xml(spec(arch=Arch.ARM64, tcg_cpu=cpu)))
    assert root.find("cpu").attrib == {"mode": "maximum", "check": "none"}
    args = [a.get("value") for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args == ["-global", "max-arm-cpu.pauth-impdef=on"]


def test_tb_cache_is_set_under_tcg_only():
    tcg = ET.fromstring(build_domain_xml(spec(tb_cache_mib=TB_CACHE_MIB)))
    assert tcg.find("features/tcg/tb-cache").attrib == {"unit": "MiB"}
    assert tcg.findtext("features/tcg/tb-cache") == str(TB_CACHE_MIB)
    kvm = ET.fromstring(build_domain_xml(spec(domain_type="kvm", tb_cache_mib=TB_CACHE_MIB)))
    assert kvm.find("features") is None and kvm.find("cpu").get("mode") == "host-model"


def test_a_tcg_cpu_of_another_arch_is_refused_by_name():
    with pytest.raises(ValueError, match="known: custom:cortex-a57"):
        tcg_cpu("custom:qemu64", Arch.ARM64)


def test_a_rehomed_definition_is_native_and_keeps_the_rest():
    emulated = build_domain_xml(
        spec(arch=Arch.ARM64, tcg_cpu=tcg_cpu("maximum,pauth-impdef=on", Arch.ARM64), tb_cache_mib=TB_CACHE_MIB,
             disk=Path("/vms/x/disk.qcow2"))
    )  # fmt: skip
    native = ET.fromstring(as_native(emulated, "kvm", "host-passthrough"))
    assert native.get("type") == "kvm" and native.find("cpu").attrib == {"mode": "host-passthrough"}
    assert native.find("features/tcg") is None and native.find(f"{{{QEMU_NS}}}commandline") is None
    assert native.find("features/gic").get("version") == "3"
    assert native.find("devices/disk/source").get("file") == "/vms/x/disk.qcow2"
    # On a native host without an accelerator the guest stays under TCG, with its TCG CPU.
    assert cpu_mode_in(as_native(emulated, "qemu", "host-model")) == "maximum,pauth-impdef=on"
