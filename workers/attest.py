"""This host's signing key, and the signed record of each VM operation it completes (queues/attestation.py)."""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from queues import attestation
from queues.arch import Arch
from queues.images import DISK_FORMATS, files_of
from queues.vocabulary import JobKind
from workers.hypervisor import HypervisorError
from workers.job_run import JobRun
from workers.operations import WorkerContext

log = logging.getLogger(__name__)

# A migration's record is signed by the source host, which ran it and saw the VM leave; the target signs its
# own `migrate_in` record (the kind's name) once the VM is there.
_OPERATIONS = {JobKind.MIGRATE: "migrate_out"}


def signing_key_path(data_dir: Path, host: str) -> Path:
    # Named by host: test clusters run several hosts on one data directory.
    return data_dir / "signing-keys" / f"{host}.pem"


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The host's Ed25519 key, made on first start: 0600 in a 0700 directory, never logged."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this host made it first: use that one
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            log.info("made this host's signing key %s", path)
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def _dotted(version: int) -> str:
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


def _domain_xml_sha256(ctx: WorkerContext, vm_id: str) -> str | None:
    """Of the domain's persistent definition, None when the operation left no domain here (delete, migration)."""
    if ctx.hypervisor.domain(vm_id) is None:
        return None
    with contextlib.suppress(HypervisorError):
        return attestation.sha256_hex(ctx.hypervisor.xml_desc(vm_id, inactive=True))
    return None


def payload(ctx: WorkerContext, kind: str, vm: dict, run: JobRun, result: dict, prev: str | None) -> dict:
    """What this host vouches for after completing `kind` on `vm`. The artifacts' SHA256s are those the host's
    content-addressed store checked when it fetched them."""
    vm_id = str(vm["id"])
    artifact = vm.get("artifact") or {}
    key = ctx.signing_key
    assert key is not None
    return {
        "format": attestation.FORMAT,
        "vm_id": vm_id,
        "operation": _OPERATIONS.get(JobKind(kind), kind),
        "job_id": run.job_id,
        "host": ctx.host.name,
        "key": attestation.public_key_text(key.public_key()),
        "at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "qemu_version": _dotted(ctx.hypervisor.hypervisor_version()),
        "libvirt_version": _dotted(ctx.hypervisor.lib_version()),
        "accel": result.get("accel") or ctx.host.accel_for(Arch(vm["arch"])),
        "artifacts_sha256": {role: sha256 for role, _source, sha256 in files_of(artifact)} if artifact else {},
        "base_sha256": artifact["sha256"].lower() if artifact.get("format") in DISK_FORMATS else None,
        "domain_xml_sha256": _domain_xml_sha256(ctx, vm_id),
        "prev": prev,
        "details": _details(run.params),
    }


def _details(params: dict) -> dict:
    """What the operation acted on beyond the VM: a snapshot's name, a migration's target host by name (not its
    addresses), an arrival's source host and migrate job."""
    details = {k: v for k, v in params.items() if isinstance(v, str | int | bool)}
    if isinstance(params.get("target"), dict):
        details["target"] = params["target"].get("name")
    return details


def signed_record(ctx: WorkerContext, kind: str, vm: dict, run: JobRun, result: dict, prev: str | None) -> dict | None:
    """The signed record, or None (logged) when this host cannot sign: an unattested operation shows as a
    missing job in the chain, never as a forged link."""
    if ctx.signing_key is None:
        return None
    try:
        return attestation.sign(ctx.signing_key, payload(ctx, kind, vm, run, result, prev))
    except Exception:
        log.exception("job %s: could not sign its attestation", run.job_id)
        return None
