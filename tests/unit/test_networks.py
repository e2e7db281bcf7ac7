"""Guest networking, the parts that are pure: a VM's MAC comes from its id, a host offers networks and bridges,
placement and routing only pick hosts that offer what the VM's NIC needs, and the domain has the NIC, the
seed, the guest agent's channel and an entropy source."""

from __future__ import annotations

import dataclasses
import random
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from queues.arch import Arch
from queues.config import SettingError, Settings
from queues.names import native_queue, tcg_queue
from queues.networks import dhcp_range, mac_for, needs, offers
from queues.placement import Demand, HostLoad, NoHostFits, NoHostOffers, Placement, place
from queues.routing import Fleet, LiveHost, offers_of
from workers.domain_xml import DomainSpec, Nic, build_domain_xml
from workers.guest_facts import AGENT_EVERY_S, AgentCache, merged
from workers.networks import host_bridges, nat_network_xml

NAT = ("libvirt", "archq")


def test_the_mac_is_qemus_prefix_and_the_last_four_bytes_of_the_vm_id():
    vm_id = "6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11"
    assert mac_for(vm_id) == "52:54:7d:0e:4f:11"
    assert mac_for(vm_id) == mac_for(vm_id.upper())


def test_the_macs_of_a_large_fleet_are_distinct():
    # 20,000 VMs on one bridge: with four random bytes two share a MAC with a chance of 5% (with three, ~100%).
    # The ids are drawn from a fixed seed, so the test says the same thing on every run.
    rng = random.Random(20261203)
    macs = {mac_for(str(uuid.UUID(int=rng.getrandbits(128), version=4))) for _ in range(20_000)}
    assert len(macs) == 20_000


def test_what_each_mode_needs_from_a_host():
    assert needs({"mode": "nat", "network": "archq"}, "archq") == NAT
    assert needs({"mode": "bridge", "bridge": "br0"}, "archq") == ("bridges", "br0")
    assert needs({"mode": "none"}, "archq") is None
    host = {"libvirt": ["archq", "default"], "bridges": ["br0"]}
    assert offers(host, NAT) and offers(host, ("bridges", "br0")) and offers(host, None)
    assert not offers(host, ("bridges", "br1")) and not offers({}, NAT)


def test_the_nat_network_hands_out_the_subnet_but_its_gateway():
    assert dhcp_range("192.168.150.0/24") == ("192.168.150.1", "192.168.150.2", "192.168.150.254")
    root = ET.fromstring(nat_network_xml("archq", "10.9.0.0/16"))
    assert root.findtext("name") == "archq" and root.find("forward").get("mode") == "nat"
    assert root.find("ip").attrib == {"address": "10.9.0.1", "prefix": "16"}
    assert root.find("ip/dhcp/range").attrib == {"start": "10.9.0.2", "end": "10.9.255.254"}
    assert root.find("bridge").get("name") == "aq-archq"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ARCHQ_NAT_SUBNET", "192.168.150.0/30"), ("ARCHQ_NAT_SUBNET", "banana"), ("ARCHQ_NAT_NETWORK", "a b")],
)
def test_a_bad_network_setting_names_itself(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingError, match=variable):
        Settings.from_env()


def test_bridges_are_those_the_host_has_and_the_settings_allow(tmp_path: Path):
    for name, bridge in (("br0", True), ("br1", True), ("eth0", False), ("virbr0", True)):
        (tmp_path / name).mkdir()
        if bridge:
            (tmp_path / name / "bridge").mkdir()
    assert host_bridges(Settings(), tmp_path) == ["br0", "br1"]
    assert host_bridges(Settings(bridges=("br1", "br9")), tmp_path) == ["br1"]


def host(name: str, arch: Arch = Arch.AMD64, emulators=(), networks: dict | None = None) -> LiveHost:
    return LiveHost(name, arch, "kvm", frozenset(emulators), False, offers_of(networks or {}))


def test_placement_only_picks_hosts_that_have_the_vms_bridge():
    loads = [
        HostLoad(host("a-empty", networks={"libvirt": ["archq"]}), 8, 8192),
        HostLoad(host("b-bridged", networks={"libvirt": ["archq"], "bridges": ["br0"]}), 8, 8192, 4, 4096),
    ]
    bridged = Demand(Arch.AMD64, 1, 512, need=("bridges", "br0"))
    assert place(Placement.LEAST_LOADED, bridged, loads).host.name == "b-bridged"
    with pytest.raises(NoHostOffers, match="bridge 'br9'"):
        place(Placement.LEAST_LOADED, Demand(Arch.AMD64, 1, 512, need=("bridges", "br9")), loads)


def test_placement_checks_the_hosts_free_disk():
    loads = [HostLoad(host("small"), 8, 8192, free_disk_mib=10 * 1024), HostLoad(host("big"), 8, 8192, 6, 6000)]
    loads[1] = dataclasses.replace(loads[1], free_disk_mib=100 * 1024)
    assert place(Placement.LEAST_LOADED, Demand(Arch.AMD64, 1, 512, disk_mib=20 * 1024), loads).host.name == "big"
    with pytest.raises(NoHostFits, match="MiB of disk"):
        place(Placement.LEAST_LOADED, Demand(Arch.AMD64, 1, 512, disk_mib=200 * 1024), loads)


def test_the_fleet_counts_which_hosts_of_a_queue_offer_a_network():
    fleet = Fleet.from_hosts(
        [
            host("x1", networks={"libvirt": ["archq"]}),
            host("x2", emulators=[Arch.ARM64], networks={"libvirt": ["archq"], "bridges": ["br0"]}),
        ]
    )
    assert fleet.coverage(native_queue(Arch.AMD64), NAT) == (2, 2)
    assert fleet.coverage(native_queue(Arch.AMD64), ("bridges", "br0")) == (1, 2)
    assert fleet.coverage(tcg_queue(Arch.ARM64), ("bridges", "br0")) == (1, 1)
    assert fleet.coverage(native_queue(Arch.ARM64), None) == (0, 0)


def spec(**overrides) -> DomainSpec:
    values = dict(
        uuid="6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11", name="demo", arch=Arch.AMD64, vcpus=2, memory_mib=256,
        kernel=Path("/images/vmlinuz"), initrd=Path("/images/initrd.img"), cmdline="console=ttyS0",
        serial_log=Path("/vms/x/console.log"), domain_type="qemu", disk=Path("/vms/x/disk.qcow2"),
    )  # fmt: skip
    values.update(overrides)
    return DomainSpec(**values)


@pytest.mark.parametrize(("kind", "source"), [("network", "archq"), ("bridge", "br0")])
def test_the_domain_has_a_virtio_nic_with_the_vms_mac(kind, source):
    root = ET.fromstring(build_domain_xml(spec(nic=Nic("52:54:00:0e:4f:11", kind, source))))
    interface = root.find("devices/interface")
    assert interface.get("type") == kind
    assert interface.find("mac").get("address") == "52:54:00:0e:4f:11"
    assert interface.find("source").attrib == {kind: source}
    assert interface.find("model").get("type") == "virtio"


def test_a_vm_without_a_nic_has_no_interface_but_keeps_agent_and_entropy():
    root = ET.fromstring(build_domain_xml(spec()))
    assert root.find("devices/interface") is None
    assert root.find("devices/channel/target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}
    assert root.find("devices/rng/backend").text == "/dev/urandom"


@pytest.mark.parametrize("arch", list(Arch))
def test_the_seed_is_a_read_only_cdrom_on_virtio_scsi(arch):
    root = ET.fromstring(build_domain_xml(spec(arch=arch, seed=Path("/vms/x/seed.iso"))))
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file") == "/vms/x/seed.iso"
    assert cdrom.find("target").attrib == {"dev": "sda", "bus": "scsi"}
    assert cdrom.find("readonly") is not None
    assert root.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    # The VM's own disk stays the first, vda.
    assert root.find("devices/disk").find("target").get("dev") == "vda"


def test_arm64_guests_get_gic_v3():
    assert ET.fromstring(build_domain_xml(spec(arch=Arch.ARM64))).find("features/gic").get("version") == "3"
    assert ET.fromstring(build_domain_xml(spec())).find("features") is None


def test_the_agents_view_of_a_nic_wins_and_keeps_the_leases_ipv4():
    lease = [{"mac": "52:54:00:00:00:01", "ipv4": "192.168.150.7", "ipv6": None, "source": "lease"}]
    agent = [
        {"mac": "52:54:00:00:00:01", "ipv4": None, "ipv6": "fd00::7", "source": "agent"},
        {"mac": "52:54:00:00:00:02", "ipv4": "10.1.2.3", "ipv6": None, "source": "agent"},
    ]
    assert merged(lease, agent) == [
        {"mac": "52:54:00:00:00:01", "ipv4": "192.168.150.7", "ipv6": "fd00::7", "source": "agent"},
        {"mac": "52:54:00:00:00:02", "ipv4": "10.1.2.3", "ipv6": None, "source": "agent"},
    ]
    assert merged(lease, []) == lease


class CountingHypervisor:
    def __init__(self) -> None:
        self.asked = 0

    def interface_addresses(self, vm_id: str, source: str) -> list[dict]:
        self.asked += 1
        return [{"mac": "52:54:00:00:00:01", "ipv4": f"10.0.0.{self.asked}", "ipv6": None, "source": source}]


def test_the_guest_agent_is_asked_only_every_few_seconds():
    now = [0.0]
    cache, hypervisor = AgentCache(clock=lambda: now[0]), CountingHypervisor()
    first = cache.addresses(hypervisor, "vm")
    now[0] = AGENT_EVERY_S - 0.1
    assert cache.addresses(hypervisor, "vm") == first and hypervisor.asked == 1
    now[0] = AGENT_EVERY_S
    assert cache.addresses(hypervisor, "vm")[0]["ipv4"] == "10.0.0.2"
