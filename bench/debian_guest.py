"""The debian-12 image started by hand, as a person would without archq: a qcow2 overlay made with `qemu-img`,
a NoCloud seed made with `genisoimage`, archq's own domain XML (workers.domain_xml) defined and started on
libvirt, the address from the network's DHCP leases, the host keys from the serial console (never trusted on
first use), then an SSH login as `debian`. bench/guest_boot.py times it against archq's boot; bench/emulation.py
runs its in-guest workloads over the login."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import libvirt
import paramiko

from client.ssh import known_hosts_for
from queues.emulation import TcgCpu
from queues.networks import mac_for
from tests.support.raw_guest import host_keys_from_console, make_seed
from workers.domain_xml import DomainSpec, Nic, build_domain_xml, domain_name
from workers.guest.debian import DebianImage

T = TypeVar("T")
BOOT_TIMEOUT_S = 900


def poll(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(interval)
    raise RuntimeError(f"no {what} within {timeout:.0f} s")


def login(address: str, host_keys: list[str], key: paramiko.PKey) -> paramiko.SSHClient | None:
    """An SSH session as `debian` that accepts only `host_keys`; None while the guest does not answer."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client._host_keys = known_hosts_for(address, host_keys)
    try:
        client.connect(address, username="debian", pkey=key, timeout=5, allow_agent=False, look_for_keys=False)
        return client
    except (OSError, paramiko.SSHException, EOFError):
        client.close()
        return None


def run(client: paramiko.SSHClient, command: str, timeout: float = 600) -> str:
    """`command`'s standard output; a failing command raises with its standard error."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    if stdout.channel.recv_exit_status() != 0:
        raise RuntimeError(f"{command!r} failed in the guest: {stderr.read().decode()[-500:]}")
    return out


def lease_of(conn: libvirt.virConnect, network: str, mac: str) -> str | None:
    leases = conn.networkLookupByName(network).DHCPLeases(mac)
    return leases[0]["ipaddr"] if leases else None


@dataclass
class RawDebian:
    """A started guest: its domain's full name, address, SSH session and seconds from `virsh start` (well,
    `create`) to each milestone."""

    domain: str
    address: str
    client: paramiko.SSHClient
    milestones: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def raw_debian(
    conn: libvirt.virConnect,
    image: DebianImage,
    work_dir: Path,
    name: str,
    key: paramiko.PKey,
    *,
    network: str,
    domain_type: str,
    vcpus: int = 2,
    memory_mib: int = 1024,
    tcg_cpu: TcgCpu | None = None,
    tb_cache_mib: int | None = None,
    emulator: Path | None = None,
) -> Iterator[RawDebian]:
    """Boot `image` by hand and log in; the domain is destroyed and undefined on exit, whatever happens.
    `emulator` replaces the QEMU binary libvirt runs (a wrapper that changes its command line)."""
    vm_id = str(uuid.uuid4())
    vm_dir = work_dir / vm_id
    vm_dir.mkdir(mode=0o755)
    started = time.perf_counter()
    disk = vm_dir / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(image.disk), str(disk)], check=True)  # fmt: skip
    seed = make_seed(vm_dir, name, f"{key.get_name()} {key.get_base64()} bench")
    spec = DomainSpec(
        uuid=vm_id, name=name, arch=image.arch, vcpus=vcpus, memory_mib=memory_mib,
        kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline,
        serial_log=vm_dir / "console.log", domain_type=domain_type, disk=disk, nic=Nic(mac_for(vm_id), "network",
        network), seed=seed, tcg_cpu=tcg_cpu, tb_cache_mib=tb_cache_mib,
    )  # fmt: skip
    xml = build_domain_xml(spec)
    if emulator is not None:
        xml = xml.replace("<devices>", f"<devices><emulator>{emulator}</emulator>", 1)
    dom = conn.defineXML(xml)
    client: paramiko.SSHClient | None = None
    try:
        dom.create()
        milestones = {"running": time.perf_counter() - started}
        assert spec.nic is not None
        mac = spec.nic.mac
        address = poll(lambda: lease_of(conn, network, mac), BOOT_TIMEOUT_S, "DHCP lease")
        milestones["lease"] = time.perf_counter() - started
        keys = poll(lambda: host_keys_from_console(spec.serial_log), BOOT_TIMEOUT_S, "host keys on the console")
        milestones["keys"] = time.perf_counter() - started
        client = poll(lambda: login(address, keys, key), BOOT_TIMEOUT_S, "SSH login")
        milestones["ssh"] = time.perf_counter() - started
        yield RawDebian(domain_name(name), address, client, milestones)
    finally:
        if client is not None:
            client.close()
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
