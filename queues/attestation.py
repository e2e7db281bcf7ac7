"""Signed attestations of VM operations: what a record is, how it is signed, and how a chain of them is verified.

A hypervisor worker signs one record per VM operation it completes with its host's Ed25519 key; the conductor
checks it against the key it pinned for that host and stores it; anyone with the chain and the hosts' public keys
verifies it offline with `verify_chain`. Each record holds the SHA256 of the VM's previous record, so a chain
is one VM's history in order: a record edited, removed or reordered breaks a signature or a link. A migration
is two records, each signed by its own host: `migrate_out` by the source (the target named in its details), then
`migrate_in` by that target once the VM is there.

Pure functions on JSON values and the `cryptography` library only: the `archq` client imports this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FORMAT = "archq-attestation/1"

# What a signed payload holds, all of it: a verifier refuses a record with fields missing or unknown.
PAYLOAD_FIELDS = frozenset(
    {
        "format",
        "vm_id",
        "operation",
        "job_id",
        "host",
        "key",
        "at",
        "qemu_version",
        "libvirt_version",
        "accel",
        "artifacts_sha256",
        "base_sha256",
        "domain_xml_sha256",
        "prev",
        "details",
    }
)


def canonical_json(value: object) -> bytes:
    """The one byte string a JSON value signs as: sorted keys, no spaces, UTF-8. Payloads hold no floats (times
    are ISO strings), so no two serializers disagree on a number."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def record_hash(payload: dict) -> str:
    """A record's identity in its chain: the SHA256 of its canonical payload (which the signature covers)."""
    return sha256_hex(canonical_json(payload))


def public_key_text(key: Ed25519PublicKey) -> str:
    """A public key as it travels and is pinned: base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def fingerprint(key_text: str) -> str:
    """How people compare keys, as ssh-keygen shows them: SHA256 of the raw key, base64 without padding."""
    try:
        digest = hashlib.sha256(base64.b64decode(key_text, validate=True)).digest()
    except (ValueError, TypeError):
        return "SHA256:? (not a base64 key)"
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def sign(private_key: Ed25519PrivateKey, payload: dict) -> dict:
    """The record {"payload", "signature"}: the signature (base64) is over the canonical payload."""
    signature = private_key.sign(canonical_json(payload))
    return {"payload": payload, "signature": base64.b64encode(signature).decode()}


def signature_valid(record: dict, key_text: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(key_text, validate=True))
        key.verify(base64.b64decode(record["signature"], validate=True), canonical_json(record["payload"]))
    except (InvalidSignature, ValueError, TypeError, KeyError):
        return False
    return True


@dataclass(frozen=True)
class Problem:
    """Why one record of a chain does not verify; `index` counts from 0 in chain order."""

    index: int
    job_id: str
    message: str

    def __str__(self) -> str:
        return f"record {self.index} (job {self.job_id}): {self.message}"


def verify_chain(vm_id: str, records: list[dict], keys: dict[str, list[str]], prev: str | None = None) -> list[Problem]:
    """Every problem of `records` (one VM's chain, oldest first) under `keys` (host name -> the public keys
    trusted for it); an empty list means every signature and every link holds. `prev`: the hash the first
    record links to (None: the records start the chain)."""
    problems: list[Problem] = []
    # The details of the record before when it is a migration out (a `migrate_in` must follow it on its target).
    left: dict | None = None
    for index, record in enumerate(records):
        payload = record.get("payload")
        if not isinstance(payload, dict):
            problems.append(Problem(index, "?", "no payload"))
            prev, left = None, None
            continue
        job_id = str(payload.get("job_id", "?"))

        def problem(message: str, index: int = index, job_id: str = job_id) -> None:
            problems.append(Problem(index, job_id, message))

        if set(payload) != PAYLOAD_FIELDS or payload.get("format") != FORMAT:
            problem(f"not an {FORMAT} payload (fields {sorted(set(payload) ^ PAYLOAD_FIELDS)} differ)")
        if payload.get("vm_id") != vm_id:
            problem(f"signed for VM {payload.get('vm_id')}, not {vm_id}")
        host, key = payload.get("host"), payload.get("key")
        if not isinstance(host, str) or not isinstance(key, str) or key not in keys.get(host, []):
            problem(f"signed with a key not trusted for host {host!r}")
        elif not signature_valid(record, key):
            problem(f"signature does not match the payload (key {fingerprint(key)} of host {host})")
        if payload.get("prev") != prev:
            problem(f"links to {payload.get('prev')}, but the previous record's hash is {prev}")
        if "hash" in record and record["hash"] != record_hash(payload):
            problem("its stated hash is not the hash of its payload")
        if payload.get("operation") == "migrate_in" and left is not None:
            # Each host signs only its own side of a move: the arrival must be where the departure said.
            target = left.get("target")
            if target != host:
                problem(f"signed by {host!r} as the migration's target, but the VM left for {target!r}")
        left = payload.get("details") if payload.get("operation") == "migrate_out" else None
        left = left if isinstance(left, dict) else None
        prev = record_hash(payload)
    return problems
