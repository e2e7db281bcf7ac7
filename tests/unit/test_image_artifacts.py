"""The artifact contract between the catalog and the hosts (queues/images.py): a disk image may carry the
kernel, initrd and command line it boots directly, both files or neither, a command line only with them; the
files a host fetches come disk first; built images are read from the manifests their builder wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from marshmallow import ValidationError

from queues.images import artifact_schema, built_artifacts, files_of

SHA = "ab" * 32
OTHER = "cd" * 32


def booted_disk(**parts) -> dict:
    artifact = {
        "format": "qcow2",
        "source": "/images/debian-12/amd64/disk.qcow2",
        "sha256": SHA,
        "kernel": {"source": "/images/debian-12/amd64/vmlinuz", "sha256": OTHER},
        "initrd": {"source": "/images/debian-12/amd64/initrd.img", "sha256": OTHER.upper()},
        "cmdline": "root=/dev/vda rw console=ttyS0",
        "login_user": "debian",
    }
    return {k: v for k, v in {**artifact, **parts}.items() if v is not None}


def test_a_disk_with_its_kernel_initrd_cmdline_and_login_user_is_valid():
    loaded = artifact_schema.load(booted_disk())
    assert loaded["kernel"]["source"].endswith("vmlinuz") and loaded["cmdline"].startswith("root=/dev/vda")
    assert loaded["login_user"] == "debian"


def test_a_plain_disk_is_still_valid_and_has_no_login_user():
    loaded = artifact_schema.load(booted_disk(kernel=None, initrd=None, cmdline=None, login_user=None))
    assert (loaded["kernel"], loaded["initrd"], loaded["cmdline"], loaded["login_user"]) == (None, None, "", None)


@pytest.mark.parametrize(("given", "missing"), [("kernel", "initrd"), ("initrd", "kernel")])
def test_a_kernel_without_its_initrd_or_the_reverse_is_refused_naming_the_missing_one(given, missing):
    with pytest.raises(ValidationError) as refused:
        artifact_schema.load(booted_disk(**{missing: None}))
    assert list(refused.value.messages) == [missing]
    assert f"required with {given}" in refused.value.messages[missing][0]


def test_a_cmdline_without_a_kernel_is_refused():
    with pytest.raises(ValidationError) as refused:
        artifact_schema.load(booted_disk(kernel=None, initrd=None))
    assert refused.value.messages == {"cmdline": ["only used with kernel and initrd"]}


def test_files_of_a_booted_disk_are_disk_kernel_initrd_in_that_order_with_lowercase_sha256s():
    assert list(files_of(booted_disk())) == [
        ("disk", "/images/debian-12/amd64/disk.qcow2", SHA),
        ("kernel", "/images/debian-12/amd64/vmlinuz", OTHER),
        ("initrd", "/images/debian-12/amd64/initrd.img", OTHER),
    ]


def test_files_of_a_plain_disk_and_of_a_kernel_initrd_artifact_are_unchanged():
    assert [role for role, _, _ in files_of(booted_disk(kernel=None, initrd=None))] == ["disk"]
    direct = {"format": "kernel+initrd", "kernel": booted_disk()["kernel"], "initrd": booted_disk()["initrd"]}
    assert [role for role, _, _ in files_of(direct)] == ["kernel", "initrd"]


def write_manifest(arch_dir: Path, **fields) -> None:
    arch_dir.mkdir(parents=True)
    files = {name: {"sha256": sha, "bytes": 1} for name, sha in
             (("disk.qcow2", SHA), ("vmlinuz", OTHER), ("initrd.img", OTHER))}  # fmt: skip
    manifest = {"arch": arch_dir.name, "disk_format": "qcow2", "files": files, "cmdline": "root=/dev/vda rw",
                "login_user": "debian", **fields}  # fmt: skip
    (arch_dir / "manifest.json").write_text(json.dumps(manifest))


def test_built_artifacts_reads_each_built_arch_from_its_manifest(tmp_path: Path):
    write_manifest(tmp_path / "debian-12" / "arm64")
    found = built_artifacts(tmp_path, "debian-12")
    arm = tmp_path / "debian-12" / "arm64"
    assert found == {
        "arm64": {
            "format": "qcow2",
            "source": str(arm / "disk.qcow2"),
            "sha256": SHA,
            "kernel": {"source": str(arm / "vmlinuz"), "sha256": OTHER},
            "initrd": {"source": str(arm / "initrd.img"), "sha256": OTHER},
            "cmdline": "root=/dev/vda rw",
            "login_user": "debian",
        }
    }
    assert artifact_schema.load(found["arm64"])["login_user"] == "debian"


def test_built_artifacts_skips_a_manifest_of_another_arch_or_without_its_files(tmp_path: Path):
    write_manifest(tmp_path / "debian-12" / "amd64", arch="arm64")
    write_manifest(tmp_path / "debian-12" / "arm64", files={"disk.qcow2": {"sha256": SHA}})
    assert built_artifacts(tmp_path, "debian-12") == {}
    assert built_artifacts(tmp_path, "never-built") == {}
