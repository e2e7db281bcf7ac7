"""The baseline a benchmark compares archq against: a built Debian image (tests/support/debian_image.py) started
with plain libvirt and nothing of archq but the image's files. An overlay disk, direct kernel boot, a hand-made
NoCloud seed on a virtio-scsi cdrom, a virtio NIC on libvirt's NAT network, the guest agent's channel, a virtio
RNG and the serial console logged to a file; then the time to a DHCP lease and to `uname -m` over SSH, with the
guest's host key taken from its console (never trusted on first use)."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import libvirt
import paramiko

T = TypeVar("T")

SYSTEM = "qemu:///system"
# Used only when libvirt has no `default` network: a NAT network of its own in a test subnet.
THROWAWAY_NETWORK = "archq-raw-test"
THROWAWAY_SUBNET = ipaddress.ip_network("192.168.219.0/24")

_LIBVIRT_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
_MACHINE = {"amd64": "q35", "arm64": "virt"}
# Named models under TCG, as archq uses (workers/domain_xml.py); cortex-a57 reached SSH about twice as fast
# as `max` here (pointer authentication is costly to emulate).
_TCG_CPU = {"amd64": "qemu64", "arm64": "cortex-a57"}
HOST_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
HOST_KEYS_END = "-----END SSH HOST KEY KEYS-----"


class RawGuestError(RuntimeError):
    """The raw guest did not come up; the message carries the tail of its console."""


@dataclass(frozen=True)
class RawBootTimings:
    """Seconds from the domain's start to each milestone."""

    arch: str
    domain_type: str
    lease_s: float
    host_keys_s: float
    ssh_s: float
    address: str
    uname: str
    root_size_bytes: int  # the root filesystem as the guest sees it (after cloud-init's resize)


def boot_raw_guest(
    image_dir: Path,
    arch: str,
    work_dir: Path,
    *,
    login_user: str = "debian",
    disk_gib: int = 8,
    vcpus: int = 2,
    memory_mib: int = 1024,
    domain_type: str = "qemu",
    cmdline: str | None = None,
    timeout_s: float = 900,
) -> RawBootTimings:
    """Boot `image_dir` (disk.qcow2, vmlinuz, initrd.img, manifest.json) once, measure, and remove the domain.
    `domain_type` is qemu (TCG) unless told: /dev/kvm can exist and still not run a guest (this lab's does
    not: the guest pauses with a KVM internal error), so KVM is the caller's claim to make. `cmdline` replaces
    the image's kernel command line (to measure what a boot option costs)."""
    manifest = json.loads((image_dir / "manifest.json").read_text())
    work_dir = Path(tempfile.mkdtemp(prefix=f"raw-{arch}-", dir=work_dir))
    # QEMU runs as libvirt-qemu: it must traverse the directory to open the overlay, seed and console log.
    work_dir.chmod(0o755)

    key = paramiko.ECDSAKey.generate()
    overlay = work_dir / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image_dir / "disk.qcow2"),
         str(overlay), f"{disk_gib}G"],
        check=True,
    )  # fmt: skip
    name = f"archq-raw-{arch}-{uuid.uuid4().hex[:8]}"
    seed = make_seed(work_dir, name, f"{key.get_name()} {key.get_base64()} raw-guest")
    console = work_dir / "console.log"
    mac = "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))

    conn = libvirt.open(SYSTEM)
    dom = None
    try:
        network = ensure_network(conn)
        xml = domain_xml(
            name=name,
            arch=arch,
            domain_type=domain_type,
            vcpus=vcpus,
            memory_mib=memory_mib,
            kernel=image_dir / "vmlinuz",
            initrd=image_dir / "initrd.img",
            cmdline=manifest["cmdline"] if cmdline is None else cmdline,
            disk=overlay,
            seed=seed,
            network=network,
            mac=mac,
            console_log=console,
            agent_socket=work_dir / "agent.sock",
        )
        started = time.monotonic()
        dom = conn.createXML(xml, 0)
        deadline = started + timeout_s

        address = _wait(lambda: _lease(dom), deadline, console, "a DHCP lease")
        lease_s = time.monotonic() - started
        host_keys = _wait(lambda: host_keys_from_console(console), deadline, console, "the SSH host keys")
        host_keys_s = time.monotonic() - started
        uname, root_size = _wait(lambda: _ssh(address, login_user, key, host_keys), deadline, console, "SSH `uname -m`")
        ssh_s = time.monotonic() - started
        return RawBootTimings(arch, domain_type, lease_s, host_keys_s, ssh_s, address, uname, root_size)
    finally:
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
        conn.close()


def make_seed(work_dir: Path, hostname: str, authorized_key: str) -> Path:
    """A NoCloud seed ISO (volume id `cidata`). No network-config: cloud-init's fallback gives the first NIC
    DHCP, where a v2 match on `en*` breaks Debian's ifupdown renderer."""
    src = work_dir / "seed"
    src.mkdir()
    (src / "meta-data").write_text(f"instance-id: {hostname}\nlocal-hostname: {hostname}\n")
    (src / "user-data").write_text(f"#cloud-config\nssh_authorized_keys:\n  - {authorized_key}\nssh_pwauth: false\n")
    seed = work_dir / "seed.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-output", str(seed), "-volid", "cidata", "-joliet", "-rock",
         str(src / "user-data"), str(src / "meta-data")],
        check=True,
    )  # fmt: skip
    return seed


def ensure_network(conn: libvirt.virConnect) -> str:
    """libvirt's `default` NAT network, started if it is not; without one, a throwaway NAT network in a test
    subnet (left defined and running for the next boot)."""
    for name in ("default", THROWAWAY_NETWORK):
        try:
            net = conn.networkLookupByName(name)
        except libvirt.libvirtError:
            continue
        if not net.isActive():
            net.create()
        return name
    hosts = list(THROWAWAY_SUBNET.hosts())
    root = ET.Element("network")
    ET.SubElement(root, "name").text = THROWAWAY_NETWORK
    ET.SubElement(root, "forward", mode="nat")
    ET.SubElement(root, "bridge", name="virbr-archqraw", stp="on", delay="0")
    ip = ET.SubElement(root, "ip", address=str(hosts[0]), netmask=str(THROWAWAY_SUBNET.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=str(hosts[1]), end=str(hosts[-1]))
    net = conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
    net.create()
    return THROWAWAY_NETWORK


def domain_xml(
    *,
    name: str,
    arch: str,
    domain_type: str,
    vcpus: int,
    memory_mib: int,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    disk: Path,
    seed: Path,
    network: str,
    mac: str,
    console_log: Path,
    agent_socket: Path,
) -> str:
    dom = ET.Element("domain", type=domain_type)
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "vcpu").text = str(vcpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch=_LIBVIRT_ARCH[arch], machine=_MACHINE[arch]).text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(kernel)
    ET.SubElement(os_el, "initrd").text = str(initrd)
    ET.SubElement(os_el, "cmdline").text = cmdline
    features = ET.SubElement(dom, "features")
    if arch == "arm64":
        # The virt machine's default GICv2 caps the guest at 8 vCPUs and is not what arm64 servers have.
        ET.SubElement(features, "gic", version="3")
    else:
        # q35 finds its PCIe devices through ACPI.
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
    if domain_type == "kvm":
        ET.SubElement(dom, "cpu", mode="host-passthrough")
    else:
        cpu = ET.SubElement(dom, "cpu", mode="custom", match="exact")
        ET.SubElement(cpu, "model", fallback="forbid").text = _TCG_CPU[arch]
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_crash").text = "destroy"

    devices = ET.SubElement(dom, "devices")
    vda = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(vda, "driver", name="qemu", type="qcow2")
    ET.SubElement(vda, "source", file=str(disk))
    ET.SubElement(vda, "target", dev="vda", bus="virtio")
    # The cloud kernel has virtio-scsi early; a SATA cdrom (AHCI is a module) would be invisible to cloud-init.
    ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    cdrom = ET.SubElement(devices, "disk", type="file", device="cdrom")
    ET.SubElement(cdrom, "driver", name="qemu", type="raw")
    ET.SubElement(cdrom, "source", file=str(seed))
    ET.SubElement(cdrom, "target", dev="sda", bus="scsi")
    ET.SubElement(cdrom, "readonly")
    nic = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(nic, "source", network=network)
    ET.SubElement(nic, "mac", address=mac)
    ET.SubElement(nic, "model", type="virtio")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "source", mode="bind", path=str(agent_socket))
    ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    # sshd's first start makes host keys: without an entropy source it could wait for the kernel's pool.
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    # A pty (free for an interactive console) whose output is also logged from the start, host keys included.
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=str(console_log), append="off")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    return ET.tostring(dom, encoding="unicode")


def host_keys_from_console(console: Path) -> list[str] | None:
    """The `type base64` host key lines cloud-init printed between its BEGIN/END markers, once complete."""
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return None
    start = text.find(HOST_KEYS_BEGIN)
    end = text.find(HOST_KEYS_END, start)
    if start < 0 or end < 0:
        return None
    lines = text[start + len(HOST_KEYS_BEGIN) : end].splitlines()
    keys = [" ".join(line.split()[:2]) for line in lines if line.strip().startswith(("ssh-", "ecdsa-"))]
    return keys or None


def _lease(dom: libvirt.virDomain) -> str | None:
    try:
        found = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
    except libvirt.libvirtError:
        return None
    for iface in found.values():
        for addr in iface.get("addrs") or []:
            if addr["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                return addr["addr"]
    return None


def _ssh(address: str, user: str, key: paramiko.PKey, host_keys: list[str]) -> tuple[str, int] | None:
    client = paramiko.SSHClient()
    known = client.get_host_keys()
    for line in host_keys:
        kind, blob = line.split()
        known.add(address, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
    # Only the keys from the console are trusted: an unknown key is refused, not learnt.
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, username=user, pkey=key, timeout=10, banner_timeout=10, auth_timeout=10,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        _, out, _ = client.exec_command("uname -m; df -B1 --output=size / | tail -1", timeout=30)
        uname, size = out.read().decode().split()
        return uname, int(size)
    except (OSError, paramiko.SSHException, EOFError):
        return None
    finally:
        client.close()


def _wait(probe: Callable[[], T | None], deadline: float, console: Path, what: str) -> T:
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.5)
    tail = ""
    with contextlib.suppress(OSError):
        tail = "\n".join(console.read_text(errors="replace").splitlines()[-30:])
    raise RawGuestError(f"no {what} in time; console tail:\n{tail}")
