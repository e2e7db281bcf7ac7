"""Routing a create job is a pure function of the request and the live fleet."""

from __future__ import annotations

import random

import pytest

from queues.arch import Arch
from queues.names import host_queue, native_queue, tcg_queue
from queues.routing import Emulation, Fleet, LiveHost, route_create

AMD_KVM = LiveHost("a1", Arch.AMD64, "kvm", frozenset({Arch.ARM64}))
AMD_TCG = LiveHost("a2", Arch.AMD64, "tcg", frozenset({Arch.ARM64}))
ARM_KVM = LiveHost("r1", Arch.ARM64, "kvm", frozenset({Arch.AMD64}))


def route(arch, emulation=Emulation.PREFER_NATIVE, *hosts):
    return route_create(arch, emulation, Fleet.from_hosts(hosts))


def test_a_live_native_host_gets_the_job_natively():
    r = route(Arch.ARM64, Emulation.PREFER_NATIVE, AMD_KVM, ARM_KVM)
    assert (r.queue, r.emulated, r.accel, r.warning, r.waiting_for) == ("arm64", False, "kvm", "", "")


def test_a_native_host_without_kvm_still_runs_natively_under_tcg():
    r = route(Arch.AMD64, Emulation.PREFER_NATIVE, AMD_TCG)
    assert (r.queue, r.emulated, r.accel) == ("amd64", False, "tcg")


@pytest.mark.parametrize("emulation", [Emulation.PREFER_NATIVE, Emulation.ALLOW])
def test_without_a_native_host_the_job_falls_back_to_tcg_with_a_warning(emulation):
    r = route(Arch.ARM64, emulation, AMD_KVM)
    assert (r.queue, r.emulated, r.accel) == ("tcg.arm64", True, "tcg")
    assert "arm64 guest runs under QEMU software emulation" in r.warning
    assert "10-20x slower" in r.warning and "native arm64 host" in r.warning


def test_native_only_waits_instead_of_emulating():
    r = route(Arch.ARM64, Emulation.NATIVE_ONLY, AMD_KVM)
    assert (r.queue, r.emulated) == ("arm64", False)
    assert "native_only" in r.waiting_for


def test_no_host_at_all_waits_on_the_native_queue_and_says_why():
    r = route(Arch.ARM64)
    assert r.queue == "arm64"
    assert "no live host runs or emulates arm64" in r.waiting_for


def test_drained_hosts_take_no_new_jobs():
    drained = LiveHost("r1", Arch.ARM64, "kvm", frozenset(), drained=True)
    assert route(Arch.ARM64, Emulation.PREFER_NATIVE, drained, AMD_KVM).queue == "tcg.arm64"


def random_host(rng: random.Random, n: int) -> LiveHost:
    arch = rng.choice(list(Arch))
    emulators = frozenset(a for a in Arch if a != arch and rng.random() < 0.5)
    return LiveHost(f"h{n}", arch, rng.choice(["kvm", "tcg"]), emulators, drained=rng.random() < 0.2)


def consumed_queues(host: LiveHost) -> set[str]:
    return {native_queue(host.arch), host_queue(host.name), *(tcg_queue(a) for a in host.emulators)}


@pytest.mark.parametrize("seed", range(300))
def test_every_job_goes_to_a_queue_a_live_worker_consumes_or_explicitly_waits(seed):
    rng = random.Random(seed)
    hosts = [random_host(rng, n) for n in range(rng.randint(0, 6))]
    arch, emulation = rng.choice(list(Arch)), rng.choice(list(Emulation))
    r = route_create(arch, emulation, Fleet.from_hosts(hosts))
    serving = [h for h in hosts if not h.drained and r.queue in consumed_queues(h)]
    if r.waiting_for:
        assert r.queue == native_queue(arch) and not serving
    else:
        assert serving, (r, hosts)
    if r.emulated:
        assert emulation != Emulation.NATIVE_ONLY and r.queue == tcg_queue(arch) and r.warning
        assert not any(h.arch == arch and not h.drained for h in hosts)
    else:
        assert r.warning == ""
