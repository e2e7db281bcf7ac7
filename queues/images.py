"""Image artifacts as the API stores them and job messages carry them: the contract between the catalog
(`web`) and the hosts' content-addressed stores (`workers`).

An artifact is what one architecture boots from one image:
- `{"format": "qcow2" | "raw", "source": ..., "sha256": ...}`: a disk image; each VM gets a qcow2 overlay on it.
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

    @validates_schema
    def complete(self, data: dict, **_kwargs) -> None:
        if data["format"] == KERNEL_INITRD:
            missing = [key for key in ("kernel", "initrd") if not data.get(key)]
        else:
            missing = [key for key in ("source", "sha256") if not data.get(key)]
        if missing:
            raise ValidationError({key: ["required for format " + data["format"]] for key in missing})


def files_of(artifact: dict) -> Iterator[tuple[str, str, str]]:
    """(role, source, sha256) of every file an artifact needs: `disk`, or `kernel` and `initrd`."""
    if artifact["format"] == KERNEL_INITRD:
        for role in ("kernel", "initrd"):
            yield role, artifact[role]["source"], artifact[role]["sha256"].lower()
    else:
        yield "disk", artifact["source"], artifact["sha256"].lower()


def native_arch(artifacts: dict[str, dict]) -> str | None:
    """`amd64`, `arm64` or `both`: which architectures an image has artifacts for."""
    present = [a.value for a in ALL if artifacts.get(a.value)]
    if len(present) == len(ALL):
        return "both"
    return present[0] if present else None


def tiny_artifacts(tiny_dir: Path) -> dict[str, dict]:
    """The artifacts of the built `tiny` guests found under `tiny_dir` (`<arch>/manifest.json`, written by
    `archq build-tiny`), keyed by arch; an arch not built yet is absent."""
    found: dict[str, dict] = {}
    for arch in ALL:
        # The file names `workers/guest/tiny.py` builds (workers and web share no code but this contract).
        directory = Path(tiny_dir) / arch.value
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if manifest.get("arch") != arch.value:
            continue
        found[arch.value] = {
            "format": KERNEL_INITRD,
            "kernel": {"source": str(directory / "vmlinuz"), "sha256": manifest["kernel_sha256"]},
            "initrd": {"source": str(directory / "initrd.img"), "sha256": manifest["initrd_sha256"]},
            "cmdline": manifest["cmdline"],
        }
    return found


artifact_schema = Artifact()
