"""Specification of the libvirt host capabilities parser, on captured and modelled hosts."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from queues.arch import Arch, from_libvirt
from workers.capabilities import (
    CapabilitiesError,
    HostCapabilities,
    parse_capabilities,
    read_capabilities_file,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "capabilities"
X86_KVM = DATA / "x86_64-kvm-aarch64-emu.xml"
X86_NOKVM = DATA / "x86_64-nokvm.xml"
ARM_KVM = DATA / "aarch64-kvm-x86_64-emu.xml"


def _host(arch: str, guests: str = "", cpu_extra: str = "", topology: str = "") -> str:
    return f"""<capabilities>
  <host>
    <cpu><arch>{arch}</arch>{cpu_extra}</cpu>
    {topology}
  </host>
  {guests}
</capabilities>"""


def _guest(arch: str, *domains: str, os_type: str = "hvm", emulator: str | None = None) -> str:
    emulator_el = f"<emulator>{emulator}</emulator>" if emulator else ""
    domain_els = "".join(f"<domain type='{d}'/>" for d in domains)
    return f"""<guest><os_type>{os_type}</os_type>
      <arch name='{arch}'><wordsize>64</wordsize>{emulator_el}<machine>m</machine>{domain_els}</arch>
    </guest>"""


class TestX86HostWithKvmCapture:
    """The real `virsh capabilities` of the lab machine: x86_64, kvm listed, aarch64 emulated."""

    @pytest.fixture
    def caps(self) -> HostCapabilities:
        return read_capabilities_file(X86_KVM)

    def test_native_arch_is_amd64(self, caps: HostCapabilities) -> None:
        assert caps.native_arch is Arch.AMD64

    def test_kvm_is_listed_as_the_accelerator(self, caps: HostCapabilities) -> None:
        assert caps.accelerators == ("kvm",)
        assert caps.can_accelerate is True

    def test_emulators_are_the_foreign_supported_archs_only(self, caps: HostCapabilities) -> None:
        assert caps.emulators == (Arch.ARM64,)

    def test_emulator_paths_include_the_native_arch(self, caps: HostCapabilities) -> None:
        assert caps.emulator_paths == {
            Arch.AMD64: "/usr/bin/qemu-system-x86_64",
            Arch.ARM64: "/usr/bin/qemu-system-aarch64",
        }

    def test_machines_hold_canonical_and_versioned_names(self, caps: HostCapabilities) -> None:
        assert {"pc", "q35", "pc-i440fx-7.2", "pc-q35-7.2"} <= set(caps.machines[Arch.AMD64])
        assert {"virt", "virt-7.2"} <= set(caps.machines[Arch.ARM64])
        assert set(caps.machines) == {Arch.AMD64, Arch.ARM64}

    def test_machines_are_sorted_without_duplicates(self, caps: HostCapabilities) -> None:
        for names in caps.machines.values():
            assert list(names) == sorted(set(names))

    def test_cpu_model_and_size(self, caps: HostCapabilities) -> None:
        assert caps.cpu_model == "kvm64"
        assert caps.total_vcpus == 2
        assert caps.total_memory_mib == 5728468 // 1024

    def test_unsupported_guest_archs_are_ignored(self, caps: HostCapabilities) -> None:
        text = X86_KVM.read_text()
        # The capture really contains them, so their absence below is the parser's doing.
        for name in ("i686", "armv7l", "armv6l"):
            assert f"<arch name='{name}'>" in text
        assert "/usr/bin/qemu-system-i386" not in caps.emulator_paths.values()
        assert "/usr/bin/qemu-system-arm" not in caps.emulator_paths.values()
        assert set(caps.emulators) | {caps.native_arch} == set(Arch)

    def test_kvm_of_a_foreign_guest_is_not_an_accelerator(self) -> None:
        # i686 lists kvm on this host; only the native arch's domain types count.
        xml = _host("x86_64", _guest("i686", "qemu", "kvm") + _guest("x86_64", "qemu"))
        assert parse_capabilities(xml).accelerators == ()


class TestX86HostWithoutKvm:
    """The same capture with every kvm domain removed: a host without /dev/kvm."""

    @pytest.fixture
    def caps(self) -> HostCapabilities:
        return read_capabilities_file(X86_NOKVM)

    def test_native_arch_is_amd64(self, caps: HostCapabilities) -> None:
        assert caps.native_arch is Arch.AMD64

    def test_no_accelerator(self, caps: HostCapabilities) -> None:
        assert caps.accelerators == ()
        assert caps.can_accelerate is False

    def test_emulation_is_unchanged(self, caps: HostCapabilities) -> None:
        assert caps.emulators == (Arch.ARM64,)
        assert caps.emulator_paths == read_capabilities_file(X86_KVM).emulator_paths

    def test_size_is_unchanged(self, caps: HostCapabilities) -> None:
        assert caps.total_vcpus > 0
        assert caps.total_memory_mib > 0


class TestArm64HostWithKvm:
    """A modelled aarch64 KVM host (Neoverse-N1, two NUMA cells) that emulates x86_64."""

    @pytest.fixture
    def caps(self) -> HostCapabilities:
        return read_capabilities_file(ARM_KVM)

    def test_native_arch_is_arm64(self, caps: HostCapabilities) -> None:
        assert caps.native_arch is Arch.ARM64
        assert caps.cpu_model == "Neoverse-N1"

    def test_kvm_is_listed_as_the_accelerator(self, caps: HostCapabilities) -> None:
        assert caps.accelerators == ("kvm",)
        assert caps.can_accelerate is True

    def test_x86_64_is_emulated(self, caps: HostCapabilities) -> None:
        assert caps.emulators == (Arch.AMD64,)
        assert caps.emulator_paths[Arch.AMD64] == "/usr/bin/qemu-system-x86_64"
        assert caps.emulator_paths[Arch.ARM64] == "/usr/bin/qemu-system-aarch64"

    def test_machines(self, caps: HostCapabilities) -> None:
        assert caps.machines == {
            Arch.ARM64: ("virt", "virt-7.2"),
            Arch.AMD64: ("pc", "pc-i440fx-7.2", "pc-q35-7.2", "q35"),
        }

    def test_vcpus_and_memory_sum_over_numa_cells(self, caps: HostCapabilities) -> None:
        # <cpu><topology> says cores='4' (per NUMA node, as libvirt reports it); the cells hold 8.
        assert caps.total_vcpus == 8
        assert caps.total_memory_mib == (16337920 + 16510976) // 1024


class TestFallbacksAndDefaults:
    def test_vcpus_fall_back_to_cpu_topology_without_cells(self) -> None:
        xml = _host("x86_64", cpu_extra="<topology sockets='2' dies='1' cores='4' threads='2'/>")
        caps = parse_capabilities(xml)
        assert caps.total_vcpus == 16
        assert caps.total_memory_mib == 0

    def test_no_topology_at_all_means_zero(self) -> None:
        caps = parse_capabilities(_host("aarch64"))
        assert (caps.total_vcpus, caps.total_memory_mib) == (0, 0)
        assert caps.cpu_model is None

    def test_host_without_guests_has_nothing_to_run(self) -> None:
        caps = parse_capabilities(_host("x86_64"))
        assert caps.accelerators == ()
        assert caps.emulators == ()
        assert caps.emulator_paths == {}
        assert caps.machines == {}

    def test_other_accelerators_are_reported_by_name(self) -> None:
        xml = _host("aarch64", _guest("aarch64", "qemu", "hvf", emulator="/opt/qemu-system-aarch64"))
        caps = parse_capabilities(xml)
        assert caps.accelerators == ("hvf",)
        assert caps.emulator_paths == {Arch.ARM64: "/opt/qemu-system-aarch64"}

    def test_non_hvm_guests_are_ignored(self) -> None:
        xml = _host("x86_64", _guest("aarch64", "qemu", os_type="exe") + _guest("x86_64", "kvm", os_type="xen"))
        caps = parse_capabilities(xml)
        assert caps.emulators == ()
        assert caps.accelerators == ()

    def test_foreign_arch_without_qemu_domain_is_not_an_emulator(self) -> None:
        xml = _host("x86_64", _guest("aarch64", "kvm"))
        assert parse_capabilities(xml).emulators == ()

    def test_memory_in_other_units_is_converted(self) -> None:
        topology = """<topology><cells num='2'>
          <cell id='0'><memory unit='MiB'>1024</memory></cell>
          <cell id='1'><memory unit='GiB'>2</memory></cell>
        </cells></topology>"""
        assert parse_capabilities(_host("x86_64", topology=topology)).total_memory_mib == 3072


class TestErrors:
    @pytest.mark.parametrize("garbage", ["", "not xml", "<capabilities><host>", "<capabilities></oops>"])
    def test_garbage_xml(self, garbage: str) -> None:
        with pytest.raises(CapabilitiesError, match="not well-formed XML"):
            parse_capabilities(garbage)

    def test_is_a_value_error(self) -> None:
        assert issubclass(CapabilitiesError, ValueError)

    def test_other_document(self) -> None:
        with pytest.raises(CapabilitiesError, match=r"expected a <capabilities> document, got <domain>"):
            parse_capabilities("<domain type='kvm'/>")

    def test_missing_host_arch(self) -> None:
        with pytest.raises(CapabilitiesError, match=r"no <host><cpu><arch>"):
            parse_capabilities("<capabilities><host><cpu/></host></capabilities>")
        with pytest.raises(CapabilitiesError, match="no <host> element"):
            parse_capabilities("<capabilities/>")

    def test_host_of_an_unsupported_arch(self) -> None:
        xml = _host("ppc64le", _guest("ppc64le", "qemu", "kvm") + _guest("x86_64", "qemu"))
        with pytest.raises(CapabilitiesError) as info:
            parse_capabilities(xml)
        message = str(info.value)
        assert "'ppc64le'" in message
        assert "x86_64" in message and "aarch64" in message

    def test_bad_numbers(self) -> None:
        with pytest.raises(CapabilitiesError, match="not an integer"):
            parse_capabilities(_host("x86_64", cpu_extra="<topology sockets='one'/>"))
        bad_memory = "<topology><cells><cell><memory unit='KiB'>lots</memory></cell></cells></topology>"
        with pytest.raises(CapabilitiesError, match="not an integer"):
            parse_capabilities(_host("x86_64", topology=bad_memory))
        bad_unit = "<topology><cells><cell><memory unit='parsecs'>1</memory></cell></cells></topology>"
        with pytest.raises(CapabilitiesError, match="unknown memory unit 'parsecs'"):
            parse_capabilities(_host("x86_64", topology=bad_unit))

    def test_file_errors_name_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "caps.xml"
        path.write_text(_host("s390x"))
        with pytest.raises(CapabilitiesError, match=r"caps\.xml: host architecture 's390x'"):
            read_capabilities_file(path)

    def test_missing_file_is_an_os_error(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            read_capabilities_file(tmp_path / "absent.xml")


@pytest.mark.libvirtd
def test_live_libvirt_capabilities_parse() -> None:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    try:
        conn = libvirt.openReadOnly("qemu:///system")
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at qemu:///system: {exc}")
    try:
        xml = conn.getCapabilities()
    finally:
        conn.close()
    expected = from_libvirt(platform.machine())
    if expected is None:
        with pytest.raises(CapabilitiesError, match="is not one archq runs"):
            parse_capabilities(xml)
        return
    caps = parse_capabilities(xml)
    assert caps.native_arch is expected
    assert caps.total_vcpus > 0
    assert caps.total_memory_mib > 0
