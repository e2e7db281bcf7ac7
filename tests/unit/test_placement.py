"""Each placement strategy picks the host its definition says, on a table of hosts with known capacity."""

from __future__ import annotations

import random

import pytest

from queues.arch import Arch
from queues.placement import Demand, HostLoad, NoHostFits, Placement, place
from queues.routing import Emulation, LiveHost


def load(name, arch=Arch.AMD64, vcpus=8, memory=8192, used_vcpus=0, used_memory=0, emulators=(), drained=False):
    host = LiveHost(name, arch, "kvm", frozenset(emulators), drained)
    return HostLoad(host, vcpus, memory, used_vcpus, used_memory)


TABLE = [
    load("a-half", used_vcpus=4, used_memory=4096),  # 50% loaded, 4 GiB free
    load("b-empty"),  # 0% loaded, 8 GiB free
    load("c-tight", used_vcpus=2, used_memory=7168),  # 87% loaded, 1 GiB free
    load("d-arm", arch=Arch.ARM64),
]
SMALL = Demand(Arch.AMD64, vcpus=1, memory_mib=512)


def test_least_loaded_picks_the_emptiest_host():
    assert place(Placement.LEAST_LOADED, SMALL, TABLE).host.name == "b-empty"


def test_best_fit_picks_the_host_with_least_memory_left_that_still_fits():
    assert place(Placement.BEST_FIT, SMALL, TABLE).host.name == "c-tight"
    big = Demand(Arch.AMD64, vcpus=1, memory_mib=2048)
    assert place(Placement.BEST_FIT, big, TABLE).host.name == "a-half"


def test_round_robin_walks_the_fitting_hosts_in_name_order():
    picks = [place(Placement.ROUND_ROBIN, SMALL, TABLE, cursor=n).host.name for n in range(4)]
    assert picks == ["a-half", "b-empty", "c-tight", "a-half"]


def test_random_picks_among_fitting_hosts_only():
    rng = random.Random(7)
    picks = {place(Placement.RANDOM, SMALL, TABLE, rng=rng).host.name for _ in range(50)}
    assert picks == {"a-half", "b-empty", "c-tight"}


def test_a_vm_that_fits_no_host_is_refused_with_the_reason():
    with pytest.raises(NoHostFits, match="16 vCPU"):
        place(Placement.LEAST_LOADED, Demand(Arch.AMD64, vcpus=16, memory_mib=512), TABLE)


def test_emulating_hosts_are_candidates_only_without_native_ones_or_when_allowed():
    fleet = [load("x86", emulators=[Arch.ARM64]), load("arm", arch=Arch.ARM64, used_memory=8000)]
    arm = Demand(Arch.ARM64, 1, 512)
    with pytest.raises(NoHostFits):
        place(Placement.LEAST_LOADED, arm, fleet)  # the native host is full: prefer_native waits for it
    allowed = Demand(Arch.ARM64, 1, 512, Emulation.ALLOW)
    assert place(Placement.LEAST_LOADED, allowed, fleet).host.name == "x86"
    only_x86 = [load("x86", emulators=[Arch.ARM64])]
    assert place(Placement.LEAST_LOADED, arm, only_x86).host.name == "x86"
    with pytest.raises(NoHostFits):
        place(Placement.LEAST_LOADED, Demand(Arch.ARM64, 1, 512, Emulation.NATIVE_ONLY), only_x86)


def test_drained_hosts_are_never_chosen():
    fleet = [load("a", drained=True), load("b", used_memory=4096)]
    assert place(Placement.LEAST_LOADED, SMALL, fleet).host.name == "b"
