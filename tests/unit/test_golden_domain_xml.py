"""The domain XML of each main VM shape, compared with a reviewed copy in tests/data/golden/: a change to
build_domain_xml shows up as a diff of whole domains, the way libvirt will see them.

Compared canonicalized (C14N 2.0, whitespace-only text dropped), so the files can be indented for reading.
After an intended change, regenerate them and review the diff:
    ARCHQ_REGENERATE_GOLDEN=1 python -m pytest tests/unit/test_golden_domain_xml.py
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from queues.arch import Arch
from workers.domain_xml import DomainSpec, Nic, build_domain_xml

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
VM = Path("/var/lib/archq/vms/6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11")
IMAGES = Path("/var/lib/archq/images")


def spec(**overrides: object) -> DomainSpec:
    values: dict = dict(
        uuid="6f1b9a3e-8a51-4a2e-9d3c-2b1a7d0e4f11", name="demo", arch=Arch.AMD64, vcpus=2, memory_mib=512,
        kernel=IMAGES / "tiny-amd64" / "vmlinuz", initrd=IMAGES / "tiny-amd64" / "initrd.img",
        cmdline="console=ttyS0 quiet", serial_log=VM / "console.log", domain_type="kvm", disk=VM / "disk.qcow2",
    )  # fmt: skip
    values.update(overrides)
    return DomainSpec(**values)


DISK_BOOT = {"kernel": None, "initrd": None, "cmdline": ""}
SHAPES = {
    "direct-amd64-kvm": spec(),
    "direct-arm64-kvm": spec(
        arch=Arch.ARM64,
        kernel=IMAGES / "tiny-arm64" / "vmlinuz",
        initrd=IMAGES / "tiny-arm64" / "initrd.img",
        cmdline="console=ttyAMA0 quiet",
        cpu_mode="host-passthrough",
    ),
    "disk-bios-amd64-kvm": spec(**DISK_BOOT),
    "disk-uefi-arm64-kvm": spec(**DISK_BOOT, arch=Arch.ARM64, nvram=VM / "nvram.fd"),
    "emulated-arm64-on-amd64": spec(**DISK_BOOT, arch=Arch.ARM64, nvram=VM / "nvram.fd", domain_type="qemu"),
    "nat-nic-and-seed-amd64-kvm": spec(
        **DISK_BOOT, nic=Nic(mac="52:54:00:12:34:56", type="network", source="archq"), seed=VM / "seed.iso"
    ),
    "bridge-nic-and-seed-arm64-emulated": spec(
        **DISK_BOOT,
        arch=Arch.ARM64,
        nvram=VM / "nvram.fd",
        domain_type="qemu",
        nic=Nic(mac="52:54:00:65:43:21", type="bridge", source="br0"),
        seed=VM / "seed.iso",
    ),
}


def canonical(xml: str) -> str:
    return ET.canonicalize(xml, strip_text=True)


def readable(xml: str) -> str:
    root = ET.fromstring(xml)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_domain_xml_matches_its_golden_file(shape: str):
    built, golden = build_domain_xml(SHAPES[shape]), GOLDEN / f"{shape}.xml"
    if os.environ.get("ARCHQ_REGENERATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(readable(built))
    assert golden.exists(), f"no {golden}: regenerate with ARCHQ_REGENERATE_GOLDEN=1 (see this file's docstring)"
    assert canonical(built) == canonical(golden.read_text()), (
        f"build_domain_xml changed the {shape} domain; if intended, regenerate the golden files "
        "(ARCHQ_REGENERATE_GOLDEN=1) and review their diff"
    )


def test_every_golden_file_is_a_shape_still_built():
    assert sorted(p.stem for p in GOLDEN.glob("*.xml")) == sorted(SHAPES)
