"""libvirt domain XML, built with xml.etree so that no name or path can break or inject into it."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from queues.arch import Arch, to_libvirt
from queues.emulation import TcgCpu, default_tcg_cpu

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)

MACHINES: dict[Arch, str] = {Arch.AMD64: "q35", Arch.ARM64: "virt"}
CONSOLES: dict[Arch, str] = {Arch.AMD64: "ttyS0", Arch.ARM64: "ttyAMA0"}


@dataclass(frozen=True)
class DomainSpec:
    uuid: str
    name: str
    arch: Arch
    vcpus: int
    memory_mib: int
    # Direct kernel boot when set; otherwise the guest boots from `disk` (BIOS on amd64, UEFI on arm64).
    kernel: Path | None
    initrd: Path | None
    cmdline: str
    serial_log: Path
    # libvirt's domain type: "kvm" (or "hvf") for hardware acceleration, "qemu" for TCG.
    domain_type: str
    # The VM's own disk (an overlay on the image, or a blank state disk for direct boot), virtio `vda`.
    disk: Path | None = None
    disk_format: str = "qcow2"
    # What the user asked for; under TCG (`domain_type` "qemu") a named model is used whatever was asked.
    cpu_mode: str = "host-model"
    # UEFI variable store of a guest booting from disk on arm64 (kept in the VM's directory).
    nvram: Path | None = None
    # The VM's NIC (None: no NIC) and its cloud-init NoCloud seed, attached read-only.
    nic: Nic | None = None
    seed: Path | None = None
    # Under TCG: the CPU (None: archq's default for the arch) and the translation-block cache in MiB (None:
    # QEMU's default, 1 GiB of address space per guest).
    tcg_cpu: TcgCpu | None = None
    tb_cache_mib: int | None = None


@dataclass(frozen=True)
class Nic:
    mac: str
    # "network" (a libvirt network, archq's NAT one) or "bridge" (a host bridge).
    type: str
    source: str


def firmware_of(spec: DomainSpec) -> str:
    """`direct` (kernel + initrd), `uefi` (arm64 from disk: AAVMF) or `bios` (amd64 from disk: SeaBIOS)."""
    if spec.kernel is not None:
        return "direct"
    return "uefi" if spec.arch is Arch.ARM64 else "bios"


DOMAIN_PREFIX = "archq-"


def domain_name(vm_name: str) -> str:
    """The libvirt name of an archq VM: prefixed so that `virsh list` tells archq's domains apart."""
    return f"{DOMAIN_PREFIX}{vm_name}"


def build_domain_xml(spec: DomainSpec) -> str:
    domain = ET.Element("domain", type=spec.domain_type)
    ET.SubElement(domain, "name").text = domain_name(spec.name)
    ET.SubElement(domain, "uuid").text = spec.uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu").text = str(spec.vcpus)

    firmware = firmware_of(spec)
    os_el = ET.SubElement(domain, "os", firmware="efi") if firmware == "uefi" else ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch=to_libvirt(spec.arch), machine=MACHINES[spec.arch]).text = "hvm"
    if firmware == "direct":
        ET.SubElement(os_el, "kernel").text = str(spec.kernel)
        ET.SubElement(os_el, "initrd").text = str(spec.initrd)
        ET.SubElement(os_el, "cmdline").text = spec.cmdline
    else:
        if firmware == "uefi":
            # libvirt picks the firmware by its descriptors' priority; Debian ranks AAVMF with Microsoft's keys
            # enrolled and Secure Boot on first, which refuses any bootloader not signed by them ("Access
            # Denied"). A cloud image's own GRUB is not: ask for the plain one, as Nova does by default.
            features = ET.SubElement(os_el, "firmware")
            ET.SubElement(features, "feature", enabled="no", name="secure-boot")
            if spec.nvram is not None:
                ET.SubElement(os_el, "nvram").text = str(spec.nvram)
        ET.SubElement(os_el, "boot", dev="hd")

    tcg = (spec.tcg_cpu or default_tcg_cpu(spec.arch)) if spec.domain_type == "qemu" else None
    if tcg is None:
        ET.SubElement(domain, "cpu", mode=spec.cpu_mode)
    elif tcg.model is None:
        ET.SubElement(domain, "cpu", mode="maximum", check="none")
    else:
        cpu = ET.SubElement(domain, "cpu", mode="custom", match="exact")
        ET.SubElement(cpu, "model", fallback="forbid").text = tcg.model

    features = ET.Element("features")
    if spec.arch is Arch.ARM64:
        # GICv3: what Debian's arm64 cloud kernels expect on `virt`, and no 8-vCPU limit as with GICv2.
        ET.SubElement(features, "gic", version="3")
    if tcg is not None and spec.tb_cache_mib is not None:
        ET.SubElement(ET.SubElement(features, "tcg"), "tb-cache", unit="MiB").text = str(spec.tb_cache_mib)
    if len(features):
        domain.append(features)

    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"

    devices = ET.SubElement(domain, "devices")
    if spec.disk is not None:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=spec.disk_format)
        ET.SubElement(disk, "source", file=str(spec.disk))
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    if spec.seed is not None:
        # virtio-scsi: a cloud kernel loads no AHCI driver early, so a SATA cdrom would be invisible to
        # cloud-init; a virtio-blk cdrom is refused by libvirt (no ejectable media). Works on q35 and virt.
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
        cdrom = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(cdrom, "driver", name="qemu", type="raw")
        ET.SubElement(cdrom, "source", file=str(spec.seed))
        ET.SubElement(cdrom, "target", dev="sda", bus="scsi")
        ET.SubElement(cdrom, "readonly")
    if spec.nic is not None:
        interface = ET.SubElement(devices, "interface", type=spec.nic.type)
        ET.SubElement(interface, "mac", address=spec.nic.mac)
        ET.SubElement(interface, "source", {spec.nic.type: spec.nic.source})
        ET.SubElement(interface, "model", type="virtio")
    # The QEMU guest agent's channel (libvirt picks the socket path): addresses, including bridged NICs and
    # IPv6, come from the guest itself when an agent runs there.
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "source", mode="bind")
    ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    # Entropy from the host: sshd's key generation at first boot would otherwise wait for it.
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    # A pty, so that libvirt's console stream (`virDomainOpenConsole`, archq's interactive console) can attach
    # to it; libvirt's <log> (written by virtlogd) keeps every byte in the file the console tail reads.
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=str(spec.serial_log), append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    if tcg is not None and tcg.qemu_globals:
        commandline = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
        for prop in tcg.qemu_globals:
            ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value="-global")
            ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=prop)
    return ET.tostring(domain, encoding="unicode")


def cpu_mode_in(domain_xml: str) -> str:
    """The CPU mode a domain's XML has: `host-model`, `host-passthrough`, `maximum` (with the CPU properties
    set on QEMU's command line: `maximum,pauth-impdef=on`), or `custom:<model>` for a named model."""
    domain = ET.fromstring(domain_xml)
    cpu = domain.find("cpu")
    if cpu is None:
        return "custom:default"
    mode = cpu.get("mode", "custom")
    if mode == "custom":
        return f"custom:{(cpu.findtext('model') or 'default').strip()}"
    if mode == "maximum":
        args = [arg.get("value", "") for arg in domain.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
        pairs = itertools.pairwise(args)
        props = [value.split(".", 1)[1] for flag, value in pairs if flag == "-global" and "-cpu." in value]
        return ",".join([mode, *props])
    return mode


def as_native(domain_xml: str, domain_type: str, cpu_mode: str) -> str:
    """The definition of an emulated guest re-homed to a host native to its architecture: `domain_type` there
    (`kvm`, or `qemu` on a host without an accelerator) and, when accelerated, the CPU mode the VM asked for
    instead of its TCG CPU, translation cache and TCG-only QEMU arguments."""
    domain = ET.fromstring(domain_xml)
    domain.set("type", domain_type)
    if domain_type != "qemu":
        for cpu in domain.findall("cpu"):
            domain.remove(cpu)
        domain.append(ET.Element("cpu", mode=cpu_mode))
        for features in domain.findall("features"):
            for tcg in features.findall("tcg"):
                features.remove(tcg)
        for commandline in domain.findall(f"{{{QEMU_NS}}}commandline"):
            domain.remove(commandline)
    return ET.tostring(domain, encoding="unicode")
