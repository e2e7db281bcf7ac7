"""XML metacharacters in VM and image names can neither break nor inject into domain XML: the API refuses
them, and even a name that got past it stays text, through xml.etree and through libvirt's own parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from queues.arch import Arch
from tests.support.api import TINY
from workers.domain_xml import DomainSpec, build_domain_xml

HOSTILE = ["<evil/>", "a&b", "x'y", 'q"r', "]]><inject>", "</name><devices/>", "&lt;&amp;", "<!--c-->"]
UUID = "0c9a7e52-5d0b-4c7e-a6a8-3a5e7f1d2b40"


def spec(name: str, image: str) -> DomainSpec:
    return DomainSpec(
        uuid=UUID, name=name, arch=Arch.AMD64, vcpus=1, memory_mib=128,
        kernel=Path(f"/images/{image}/vmlinuz"), initrd=Path(f"/images/{image}/initrd.img"),
        cmdline="console=ttyS0", serial_log=Path(f"/vms/{name}/console.log"), domain_type="qemu",
    )  # fmt: skip


@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_api_refuses_metacharacters_in_vm_and_image_names(client, hostile):
    for field in ("name", "image"):
        response = client.post("/api/v1/vms", json={**TINY, field: hostile})
        assert response.status_code == 422, response.get_json()
        assert field in response.get_json()["error"]["fields"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_image_paths_with_metacharacters_stay_attribute_and_element_text(hostile):
    root = ET.fromstring(build_domain_xml(spec("demo", hostile)))
    assert root.findtext("os/kernel") == f"/images/{hostile}/vmlinuz"
    assert root.findtext("os/initrd") == f"/images/{hostile}/initrd.img"
    assert [child.tag for child in root].count("devices") == 1
    assert root.find(".//inject") is None and root.find(".//evil") is None


@pytest.mark.parametrize("hostile", HOSTILE)
def test_libvirt_reads_back_exactly_the_hostile_name(hostile):
    conn = libvirt.open("test:///default")
    try:
        if "/" in hostile:
            # libvirt itself refuses a '/' in a domain name: the name is read as text, not as markup.
            with pytest.raises(libvirt.libvirtError, match="cannot contain '/'"):
                conn.defineXML(build_domain_xml(spec(hostile, hostile)))
            return
        domain = conn.defineXML(build_domain_xml(spec(hostile, hostile)))
        try:
            assert domain.name() == f"archq-{hostile}"
            reread = ET.fromstring(domain.XMLDesc())
            assert reread.findtext("os/kernel") == f"/images/{hostile}/vmlinuz"
            assert len(reread.findall("devices")) == 1
        finally:
            domain.undefine()
    finally:
        conn.close()
