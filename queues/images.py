"""Image artifacts as the API stores them and job messages carry them: the contract between the catalog
(`web`) and the hosts' content-addressed stores (`workers`).

An artifact is what one architecture boots from one image:
- `{"format": "qcow2" | "raw", "source": ..., "sha256": ...}`: a disk image; each VM gets a qcow2 overlay on it.
  It may also carry `kernel` and `initrd` (both or neither) and a `cmdline` (only with them): the VM then boots
  that kernel directly, with its root filesystem on the overlay (the `debian-12` image built by
  `archq images build`).
Any artifact may name `login_user`, the image's default SSH user.
- `{"format": "kernel+initrd", "kernel": {"source", "sha256"}, "initrd": {"source", "sha256"}, "cmdline"}`:
  direct kernel boot; each VM gets a small blank qcow2 state disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from queues.arch import ALL

TINY = "tiny"
DISK_FORMATS = ("qcow2", "raw")
KERNEL_INITRD = "kernel+initrd"
FORMATS = (*DISK_FORMATS, KERNEL_INITRD)
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
MAX_CMDLINE = 1024
MAX_LOGIN_USER = 32
LOGIN_USER_PATTERN = r"^[a-z_][a-z0-9_-]*$"
MANIFEST_NAME = "manifest.json"


class FileRef(Schema):
    class Meta:
        unknown = EXCLUDE

    source = fields.String(required=True)
    sha256 = fields.String(required=True, validate=validate.Regexp(SHA256_PATTERN, error="must be 64 hex digits"))


class Artifact(Schema):
    """An artifact inside a job message: already validated by the API, so unknown keys are ignored."""

    class Meta:
        unknown = EXCLUDE

    format = fields.String(required=True, validate=validate.OneOf(FORMATS))
    source = fields.String(load_default=None)
    sha256 = fields.String(load_default=None, validate=validate.Regexp(SHA256_PATTERN))
    kernel = fields.Nested(FileRef, load_default=None)
    initrd = fields.Nested(FileRef, load_default=None)
    cmdline = fields.String(load_default="", validate=validate.Length(max=MAX_CMDLINE))
    login_user = fields.String(load_default=None, validate=validate.Regexp(LOGIN_USER_PATTERN))

    @validates_schema
    def complete(self, data: dict, **_kwargs: object) -> None:
        if data["format"] == KERNEL_INITRD:
            missing = [key for key in ("kernel", "initrd") if not data.get(key)]
        else:
            missing = [key for key in ("source", "sha256") if not data.get(key)]
        if missing:
            raise ValidationError({key: ["required for format " + data["format"]] for key in missing})
        if data["format"] in DISK_FORMATS:
            errors = disk_boot_errors(data)
            if errors:
                raise ValidationError(errors)


def disk_boot_errors(artifact: dict) -> dict[str, list[str]]:
    """What is wrong with the direct-boot part of a disk artifact: `kernel` and `initrd` come together (a kernel
    without its initrd cannot mount the virtio root, an initrd alone boots nothing), and `cmdline` only with them
    (a disk booted by its firmware reads its own command line). Shared with the API's validation."""
    given = [key for key in ("kernel", "initrd") if artifact.get(key)]
    if len(given) == 1:
        other = "initrd" if given[0] == "kernel" else "kernel"
        return {other: [f"required with {given[0]} (a disk booted directly needs both)"]}
    if not given and artifact.get("cmdline"):
        return {"cmdline": ["only used with kernel and initrd"]}
    return {}


def files_of(artifact: dict) -> Iterator[tuple[str, str, str]]:
    """(role, source, sha256) of every file an artifact needs, in this order: `disk` (a disk format), then
    `kernel` and `initrd` (direct kernel boot, from a kernel+initrd artifact or a disk that carries them)."""
    if artifact["format"] != KERNEL_INITRD:
        yield "disk", artifact["source"], artifact["sha256"].lower()
    if artifact.get("kernel"):
        for role in ("kernel", "initrd"):
            yield role, artifact[role]["source"], artifact[role]["sha256"].lower()


def native_arch(artifacts: dict[str, dict]) -> str | None:
    """`amd64`, `arm64` or `both`: which architectures an image has artifacts for."""
    present = [a.value for a in ALL if artifacts.get(a.value)]
    if len(present) == len(ALL):
        return "both"
    return present[0] if present else None


def _manifests(directory: Path) -> Iterator[tuple[str, Path, dict]]:
    """(arch, arch directory, manifest) of every architecture built under `directory` (`<arch>/manifest.json`,
    written by the builders in `workers/guest/`); an arch not built yet, or unreadable, is skipped."""
    for arch in ALL:
        # Workers and web share no code but this contract: the file names the builders write.
        arch_dir = Path(directory) / arch.value
        try:
            manifest = json.loads((arch_dir / MANIFEST_NAME).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("arch") == arch.value:
            yield arch.value, arch_dir, manifest


def tiny_artifacts(tiny_dir: Path) -> dict[str, dict]:
    """The artifacts of the built `tiny` guests found under `tiny_dir` (`<arch>/manifest.json`, written by
    `archq images build tiny`), keyed by arch; an arch not built yet is absent."""
    return {
        arch: {
            "format": KERNEL_INITRD,
            "kernel": {"source": str(arch_dir / "vmlinuz"), "sha256": manifest["kernel_sha256"]},
            "initrd": {"source": str(arch_dir / "initrd.img"), "sha256": manifest["initrd_sha256"]},
            "cmdline": manifest["cmdline"],
        }
        for arch, arch_dir, manifest in _manifests(tiny_dir)
    }


def built_artifacts(images_dir: Path, name: str) -> dict[str, dict]:
    """The artifacts of a disk image built under `images_dir/name` (`<arch>/manifest.json`, written by `archq
    images build NAME`): its qcow2 disk with the kernel, initrd and command line it boots directly, keyed by
    arch; an arch not built yet (or whose manifest lacks a file) is absent."""
    found: dict[str, dict] = {}
    for arch, arch_dir, manifest in _manifests(Path(images_dir) / name):
        files = manifest.get("files") or {}
        try:
            disk, kernel, initrd = (
                {"source": str(arch_dir / file), "sha256": files[file]["sha256"]}
                for file in ("disk.qcow2", "vmlinuz", "initrd.img")
            )
        except (KeyError, TypeError):
            continue
        found[arch] = {
            "format": manifest.get("disk_format", "qcow2"),
            **disk,
            "kernel": kernel,
            "initrd": initrd,
            "cmdline": manifest.get("cmdline", ""),
        }
        if manifest.get("login_user"):
            found[arch]["login_user"] = manifest["login_user"]
        # The size the guest sees: a VM's `disk_gib` may not be smaller.
        if isinstance(manifest.get("virtual_size"), int):
            found[arch]["virtual_size"] = manifest["virtual_size"]
    return found


artifact_schema = Artifact()
