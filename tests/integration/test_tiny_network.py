"""The tiny guest's network on the real libvirtd (qemu:///system): with a virtio NIC on a libvirt NAT network it
loads its drivers, takes a DHCP lease from libvirt's dnsmasq and says so in one console line, the same address
libvirt reports from its lease file; on a network without DHCP it says the lease failed; without a NIC it still
boots, says it has none, and ticks.

Each architecture boots under TCG with direct kernel boot. The networks are this module's own (their names and
subnets are used by nothing else) and exist only while the module runs. Needs dnsmasq-base on the host."""

from __future__ import annotations

import ipaddress
import os
import platform
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from queues.arch import Arch, parse_arch, to_libvirt
from tests.support.domains import SYSTEM, force_remove
from workers.guest.tiny import TinyGuest, TinyNet, ensure_tiny_guest, marker_line, parse_net_line

pytestmark = pytest.mark.libvirtd

NETWORK = "aqtest-tiny"
SUBNET = ipaddress.IPv4Network("192.168.213.0/24")
GATEWAY = ipaddress.IPv4Address("192.168.213.1")
DHCP_FIRST = ipaddress.IPv4Address("192.168.213.100")
DHCP_LAST = ipaddress.IPv4Address("192.168.213.199")
MACS = {Arch.AMD64: "52:54:00:a7:13:01", Arch.ARM64: "52:54:00:a7:13:02"}
# An isolated network whose dnsmasq serves no DHCP: a NIC there never gets a lease.
NO_DHCP_NETWORK = "aqtest-tiny-nodhcp"
NO_DHCP_GATEWAY = ipaddress.IPv4Address("192.168.214.1")
NO_DHCP_MAC = "52:54:00:a7:14:01"

# Measured here: marker 2-4 s, lease under a second after it; the margin is for a machine busy with other guests.
LEASE_TIMEOUT_S = 90.0
# A NIC-less guest waits 5 s for an interface before it says "none".
NO_NIC_TIMEOUT_S = 60.0
# The guest's udhcpc gives up after 10 discovers 2 s apart.
NO_LEASE_TIMEOUT_S = 120.0
TICK_TIMEOUT_S = 10.0

MACHINES = {Arch.AMD64: "q35", Arch.ARM64: "virt"}
TCG_CPUS = {Arch.AMD64: "qemu64", Arch.ARM64: "cortex-a57"}
IMAGES_CACHE = Path(os.environ.get("ARCHQ_TEST_CACHE") or "/var/tmp/archq-test-cache")


def network_xml() -> str:
    network = ET.Element("network")
    ET.SubElement(network, "name").text = NETWORK
    ET.SubElement(network, "forward", mode="nat")
    ip = ET.SubElement(network, "ip", address=str(GATEWAY), netmask=str(SUBNET.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=str(DHCP_FIRST), end=str(DHCP_LAST))
    return ET.tostring(network, encoding="unicode")


def no_dhcp_network_xml() -> str:
    network = ET.Element("network")
    ET.SubElement(network, "name").text = NO_DHCP_NETWORK
    ET.SubElement(network, "ip", address=str(NO_DHCP_GATEWAY), netmask="255.255.255.0")
    return ET.tostring(network, encoding="unicode")


def domain_xml(name: str, guest: TinyGuest, console: Path, mac: str | None, network: str = NETWORK) -> str:
    """A TCG domain booting the tiny guest's kernel and initrd directly, its serial port in `console`, with one
    virtio NIC on `network` when `mac` is given and no NIC at all otherwise."""
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = "128"
    ET.SubElement(domain, "vcpu").text = "1"
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch=to_libvirt(guest.arch), machine=MACHINES[guest.arch]).text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(guest.kernel)
    ET.SubElement(os_el, "initrd").text = str(guest.initrd)
    ET.SubElement(os_el, "cmdline").text = guest.cmdline
    cpu = ET.SubElement(domain, "cpu", mode="custom", match="exact")
    ET.SubElement(cpu, "model", fallback="forbid").text = TCG_CPUS[guest.arch]
    ET.SubElement(domain, "on_reboot").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    if mac is not None:
        interface = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(interface, "source", network=network)
        ET.SubElement(interface, "mac", address=mac)
        ET.SubElement(interface, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(console), append="off")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def console_lines(console: Path) -> list[str]:
    try:
        text = console.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return []
    return [line.rstrip("\r") for line in text.split("\n")]


def net_lines(console: Path) -> list[TinyNet]:
    return [net for line in console_lines(console) if (net := parse_net_line(line)) is not None]


def wait_for_line(console: Path, wanted: Callable[[str], bool], timeout: float, what: str) -> float:
    """Seconds until a console line satisfies `wanted`; fails the test with the console's tail after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if any(wanted(line) for line in console_lines(console)):
            return time.monotonic() - started
        time.sleep(0.05)
    tail = "\n".join(console_lines(console)[-30:])
    pytest.fail(f"no {what} on the console within {timeout:.0f} s; console:\n{tail}")


def ticks_after(console: Path, line_index: int) -> bool:
    return any(line.startswith("archq-tiny tick ") for line in console_lines(console)[line_index + 1 :])


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    connection = libvirt.open(SYSTEM)
    yield connection
    connection.close()


def remove_network(conn: libvirt.virConnect, name: str = NETWORK) -> None:
    try:
        network = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return
    # A transient network is gone once destroyed, so ask before.
    persistent = network.isPersistent()
    if network.isActive():
        network.destroy()
    if persistent:
        network.undefine()


@pytest.fixture(scope="module")
def nat_network(conn: libvirt.virConnect) -> Iterator[libvirt.virNetwork]:
    """The test's own transient NAT network; one left by an interrupted run is removed first."""
    remove_network(conn)
    network = conn.networkCreateXML(network_xml())
    yield network
    remove_network(conn)


@pytest.fixture
def no_dhcp_network(conn: libvirt.virConnect) -> Iterator[libvirt.virNetwork]:
    remove_network(conn, NO_DHCP_NETWORK)
    network = conn.networkCreateXML(no_dhcp_network_xml())
    yield network
    remove_network(conn, NO_DHCP_NETWORK)


@pytest.fixture(scope="module", params=list(Arch), ids=lambda arch: arch.value)
def tiny(request: pytest.FixtureRequest) -> TinyGuest:
    return ensure_tiny_guest(request.param, IMAGES_CACHE / "tiny")


@pytest.fixture
def console(tmp_path: Path) -> Path:
    # QEMU runs as an unprivileged user and writes the serial log into the test's directory.
    for directory in (tmp_path, *tmp_path.parents):
        if directory in (Path("/tmp"), Path("/")):
            break
        directory.chmod(0o755)
    return tmp_path / "console.log"


@pytest.fixture
def boot(conn: libvirt.virConnect, console: Path) -> Iterator[Callable[..., libvirt.virDomain]]:
    """Starts a transient tiny-guest domain (at most one per test) and removes it afterwards."""
    names: list[str] = []

    def start(guest: TinyGuest, mac: str | None, network: str = NETWORK) -> libvirt.virDomain:
        name = f"aqtest-tiny-{'net' if mac else 'nonic'}-{guest.arch.value}"
        force_remove(name)
        names.append(name)
        return conn.createXML(domain_xml(name, guest, console, mac, network), 0)

    yield start
    for name in names:
        force_remove(name)


def lease_addresses(domain: libvirt.virDomain) -> dict[str, list[tuple[str, ipaddress.IPv4Interface]]]:
    """MAC -> IPv4 addresses libvirt's dnsmasq has leased to the domain's NICs."""
    found: dict[str, list[tuple[str, ipaddress.IPv4Interface]]] = {}
    for name, interface in (domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE) or {}).items():
        for address in interface.get("addrs") or []:
            if address["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                cidr = ipaddress.IPv4Interface(f"{address['addr']}/{address['prefix']}")
                found.setdefault(interface["hwaddr"].lower(), []).append((name, cidr))
    return found


def test_guest_with_a_virtio_nic_takes_a_dhcp_lease_and_reports_it_on_its_console(
    tiny: TinyGuest, nat_network: libvirt.virNetwork, boot, console: Path
) -> None:
    mac = MACS[tiny.arch]
    started = time.monotonic()
    domain = boot(tiny, mac)
    wait_for_line(console, lambda line: line == marker_line(tiny.arch), LEASE_TIMEOUT_S, "boot marker")
    to_marker = time.monotonic() - started
    wait_for_line(console, lambda line: parse_net_line(line) is not None, LEASE_TIMEOUT_S, "ARCHQ-TINY-NET line")
    to_lease = time.monotonic() - started

    [net] = net_lines(console)
    assert net.status == "up", net
    assert net.mac == mac
    assert net.ipv4 is not None
    assert net.ipv4.network == SUBNET
    assert DHCP_FIRST <= net.ipv4.ip <= DHCP_LAST

    # libvirt's own record of the lease (dnsmasq's lease file) names the same MAC and address.
    deadline = time.monotonic() + 10
    while mac not in (leases := lease_addresses(domain)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [cidr for _, cidr in leases.get(mac, [])] == [net.ipv4], leases

    # Networking runs beside init's counter, which keeps going after the lease.
    net_at = next(i for i, line in enumerate(console_lines(console)) if parse_net_line(line) is not None)
    wait_for_line(console, lambda _: ticks_after(console, net_at), TICK_TIMEOUT_S, "tick after the network line")
    assert domain.isActive()
    print(f"\n{tiny.arch.value}: marker {to_marker:.1f} s, lease {to_lease:.1f} s after start ({net.ipv4})")


def test_guest_without_a_nic_still_boots_says_so_and_ticks(tiny: TinyGuest, boot, console: Path) -> None:
    started = time.monotonic()
    domain = boot(tiny, None)
    wait_for_line(console, lambda line: line == marker_line(tiny.arch), NO_NIC_TIMEOUT_S, "boot marker")
    to_marker = time.monotonic() - started
    # The counter does not wait for the (background) search for a NIC.
    wait_for_line(console, lambda line: line == "archq-tiny tick 1", TICK_TIMEOUT_S, "first tick")
    wait_for_line(console, lambda line: parse_net_line(line) is not None, NO_NIC_TIMEOUT_S, "ARCHQ-TINY-NET line")
    to_none = time.monotonic() - started

    assert net_lines(console) == [TinyNet(status="none")]
    net_at = next(i for i, line in enumerate(console_lines(console)) if parse_net_line(line) is not None)
    wait_for_line(console, lambda _: ticks_after(console, net_at), TICK_TIMEOUT_S, "tick after the network line")
    assert domain.isActive()
    print(f"\n{tiny.arch.value}: marker {to_marker:.1f} s, 'none' {to_none:.1f} s after start")


def test_guest_whose_nic_gets_no_lease_says_so_and_ticks(
    no_dhcp_network: libvirt.virNetwork, boot, console: Path
) -> None:
    # The network script is the same on both architectures; the host's own one is enough here.
    guest = ensure_tiny_guest(parse_arch(platform.machine()), IMAGES_CACHE / "tiny")
    started = time.monotonic()
    domain = boot(guest, NO_DHCP_MAC, NO_DHCP_NETWORK)
    wait_for_line(console, lambda line: line == marker_line(guest.arch), NO_LEASE_TIMEOUT_S, "boot marker")
    wait_for_line(console, lambda line: parse_net_line(line) is not None, NO_LEASE_TIMEOUT_S, "ARCHQ-TINY-NET line")
    given_up = time.monotonic() - started

    assert net_lines(console) == [TinyNet(status="dhcp-failed", mac=NO_DHCP_MAC)]
    net_at = next(i for i, line in enumerate(console_lines(console)) if parse_net_line(line) is not None)
    wait_for_line(console, lambda _: ticks_after(console, net_at), TICK_TIMEOUT_S, "tick after the network line")
    assert domain.isActive()
    print(f"\n{guest.arch.value}: 'dhcp-failed' {given_up:.1f} s after start")
