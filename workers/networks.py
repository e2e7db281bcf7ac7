"""The host's side of guest networking: archq's NAT network (defined, started and autostarted when the worker
starts, left alone when an operator already defined one of that name), the bridges `bridge` VMs may join,
the addresses of a VM's NIC, and the DHCP leases a deleted VM leaves behind."""

from __future__ import annotations

import logging
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from queues.config import Settings
from queues.networks import dhcp_range
from workers.hypervisor import Hypervisor, HypervisorError

log = logging.getLogger(__name__)

SYS_CLASS_NET = Path("/sys/class/net")


def nat_network_xml(name: str, subnet: str) -> str:
    """A libvirt NAT network with DHCP: the host is the subnet's first address and routes the rest out."""
    gateway, first, last = dhcp_range(subnet)
    prefix = subnet.split("/")[1]
    network = ET.Element("network")
    ET.SubElement(network, "name").text = name
    ET.SubElement(network, "forward", mode="nat")
    # Without a name libvirt picks virbrN, which may clash with an operator's networks after a reboot. No STP:
    # a bridge of taps alone cannot loop, and with STP on the kernel holds every new port (a guest booting or
    # arriving by migration) for twice its minimum forward delay of 2 s before it forwards a frame.
    ET.SubElement(network, "bridge", name=bridge_name(name), stp="off", delay="0")
    ip = ET.SubElement(network, "ip", address=gateway, prefix=prefix)
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=first, end=last)
    return ET.tostring(network, encoding="unicode")


def bridge_name(network: str) -> str:
    # Linux interface names are at most 15 bytes.
    return f"aq-{network}"[:15]


def ensure_nat_network(hypervisor: Hypervisor, settings: Settings) -> str | None:
    """Define, start and autostart archq's NAT network; the name it runs under, or None when it cannot run
    here (then the host does not offer `nat` and placement sends such VMs elsewhere)."""
    try:
        created = hypervisor.ensure_network(
            settings.nat_network, nat_network_xml(settings.nat_network, settings.nat_subnet)
        )
    except HypervisorError as exc:
        log.error("NAT network %r is not available on this host: %s", settings.nat_network, exc)
        return None
    log.info("NAT network %r %s", settings.nat_network, "created" if created else "already defined; left as it is")
    return settings.nat_network


def host_bridges(settings: Settings, sys_class_net: Path = SYS_CLASS_NET) -> list[str]:
    """The host's Linux bridges VMs may join: those named in ARCHQ_BRIDGES that exist, or all of them."""
    present = sorted(p.name for p in sys_class_net.glob("*") if (p / "bridge").is_dir())
    if not settings.bridges:
        # libvirt's own NAT bridges are reached through their networks, not joined directly.
        return [b for b in present if not b.startswith(("virbr", "aq-"))]
    missing = sorted(set(settings.bridges) - set(present))
    if missing:
        log.warning("ARCHQ_BRIDGES names bridges this host does not have: %s", ", ".join(missing))
    return [b for b in settings.bridges if b in present]


def offered(hypervisor: Hypervisor, settings: Settings) -> dict:
    """What this host offers VMs, as its heartbeat reports it: active libvirt networks and bridges."""
    try:
        active = hypervisor.active_networks()
    except HypervisorError:
        log.warning("cannot list libvirt networks", exc_info=True)
        active = []
    return {"libvirt": sorted(active), "bridges": host_bridges(settings)}


def release_leases(hypervisor: Hypervisor, network: str, mac: str) -> int:
    """Hand a deleted VM's DHCP leases back to libvirt's dnsmasq (dnsmasq-utils' dhcp_release, as OpenStack's
    DHCP agent does), so its address is free at once and no lease names it. Returns how many were released."""
    released = 0
    for lease in hypervisor.dhcp_leases(network, mac):
        argv = ["dhcp_release", lease["iface"], lease["ipaddr"], mac]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=10)
            released += 1
        except FileNotFoundError:
            log.warning("dhcp_release is not installed (apt-get install dnsmasq-utils); lease of %s kept", mac)
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("releasing the lease of %s failed: %s", mac, exc)
    return released
