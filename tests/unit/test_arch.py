from __future__ import annotations

import pytest

from queues.arch import Arch, UnknownArch, from_libvirt, parse_arch, to_libvirt


@pytest.mark.parametrize(
    ("alias", "arch"),
    [("amd64", Arch.AMD64), ("x86_64", Arch.AMD64), ("X86-64", Arch.AMD64), (" x86_64 ", Arch.AMD64),
     ("arm64", Arch.ARM64), ("AARCH64", Arch.ARM64), ("arm64v8", Arch.ARM64)],
)  # fmt: skip
def test_aliases_map_to_the_canonical_name(alias, arch):
    assert parse_arch(alias) is arch


@pytest.mark.parametrize("name", ["i686", "armv7l", "ppc64le", "", "amd"])
def test_other_names_are_refused_with_the_accepted_list(name):
    with pytest.raises(UnknownArch, match=r"accepted: .*aarch64"):
        parse_arch(name)


def test_libvirt_names_round_trip():
    for arch in Arch:
        assert from_libvirt(to_libvirt(arch)) is arch
    assert to_libvirt(Arch.AMD64) == "x86_64" and to_libvirt(Arch.ARM64) == "aarch64"
    assert from_libvirt("i686") is None
