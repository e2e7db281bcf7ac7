"""How a VM is attached to a network: the modes the API offers, the MAC derived from the VM's id, and what a
host must have for a VM of each mode (the contract between the API's placement and the workers' heartbeats)."""

from __future__ import annotations

import ipaddress
import uuid
from enum import StrEnum


class NetworkMode(StrEnum):
    NAT = "nat"  # archq's own libvirt network on each host: DHCP and NAT to the host's uplink
    BRIDGE = "bridge"  # a host bridge: the VM sits on the hosts' LAN
    NONE = "none"  # no NIC


# libvirt's (and QEMU's) locally administered prefix: what `virsh` users recognise as a VM's NIC.
# QEMU's locally administered prefix, shortened to two bytes: with three (52:54:00, libvirt's default) and three
# random bytes, two of 1,000 VMs on one bridged network shared a MAC with a chance of 3%, of 5,000 with 52%;
# with four random bytes, 0.01% and 0.3%.
MAC_PREFIX = "52:54"


def mac_for(vm_id: str) -> str:
    """The VM's MAC address: the prefix and the last four bytes of its UUID (random in a version 4 UUID). A VM
    keeps it for its life, so a DHCP server hands the same address back after a stop, a revert or a return to
    the same host."""
    tail = uuid.UUID(str(vm_id)).bytes[-4:]
    return ":".join([MAC_PREFIX, *(f"{b:02x}" for b in tail)])


def needs(network: dict, nat_network: str) -> tuple[str, str] | None:
    """What a host must offer for a VM attached this way: ("libvirt", name) or ("bridges", name); None for no
    NIC. The keys are those of a heartbeat's `networks`."""
    mode = NetworkMode(network.get("mode", NetworkMode.NONE))
    if mode is NetworkMode.NAT:
        return ("libvirt", nat_network)
    if mode is NetworkMode.BRIDGE:
        return ("bridges", network["bridge"])
    return None


def offers(host_networks: dict, need: tuple[str, str] | None) -> bool:
    return need is None or need[1] in (host_networks or {}).get(need[0], ())


def dhcp_range(subnet: str) -> tuple[str, str, str]:
    """(gateway, first, last) of a NAT subnet: the host takes the first address, DHCP hands out the rest."""
    net = ipaddress.IPv4Network(subnet)
    if net.num_addresses < 8:
        raise ValueError(f"{subnet} is too small for a NAT network (at least a /29)")
    hosts = list(net.hosts())
    return str(hosts[0]), str(hosts[1]), str(hosts[-1])
