"""Signing and verifying attestation chains (queues/attestation.py), and the worker's key file."""

from __future__ import annotations

import copy
import stat

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from queues import attestation
from queues.attestation import PAYLOAD_FIELDS, canonical_json, public_key_text, record_hash, sign, verify_chain
from workers.attest import load_or_create_key, signing_key_path

VM = "0b7f3c8e-5d52-4f3a-9a39-1d1c2c9b8a10"


def _payload(key: Ed25519PrivateKey, operation: str, job: str, prev: str | None, host: str = "h1") -> dict:
    payload = {
        "format": attestation.FORMAT,
        "vm_id": VM,
        "operation": operation,
        "job_id": job,
        "host": host,
        "key": public_key_text(key.public_key()),
        "at": "2026-12-02T11:00:00.000000+00:00",
        "qemu_version": "7.2.0",
        "libvirt_version": "9.0.0",
        "accel": "tcg",
        "artifacts_sha256": {"disk": "a" * 64},
        "base_sha256": "a" * 64,
        "domain_xml_sha256": "b" * 64,
        "prev": prev,
        "details": {},
    }
    assert set(payload) == PAYLOAD_FIELDS
    return payload


def _chain(key: Ed25519PrivateKey, operations: list[str], host: str = "h1") -> list[dict]:
    records, prev = [], None
    for n, operation in enumerate(operations):
        record = sign(key, _payload(key, operation, f"job-{n}", prev, host))
        records.append(record)
        prev = record_hash(record["payload"])
    return records


def test_canonical_json_ignores_key_order_and_spacing():
    assert canonical_json({"b": 1, "a": [1, "é"]}) == canonical_json({"a": [1, "é"], "b": 1})
    assert canonical_json({"b": 1, "a": None}) == b'{"a":null,"b":1}'


def test_a_chain_signed_by_its_host_verifies():
    key = Ed25519PrivateKey.generate()
    records = _chain(key, ["create", "snapshot", "stop", "start", "delete"])
    assert verify_chain(VM, records, {"h1": [public_key_text(key.public_key())]}) == []


def test_an_edited_record_fails_and_is_named():
    key = Ed25519PrivateKey.generate()
    records = _chain(key, ["create", "stop", "start"])
    records[1]["payload"]["accel"] = "kvm"
    problems = verify_chain(VM, records, {"h1": [public_key_text(key.public_key())]})
    # The edited record's signature fails, and the next record no longer links to it.
    assert [(p.index, p.job_id) for p in problems] == [(1, "job-1"), (2, "job-2")]
    assert "signature does not match" in str(problems[0]) and "record 1 (job job-1)" in str(problems[0])
    assert "links to" in problems[1].message


def test_a_removed_or_reordered_record_breaks_the_links():
    key = Ed25519PrivateKey.generate()
    keys = {"h1": [public_key_text(key.public_key())]}
    records = _chain(key, ["create", "stop", "start"])
    assert [p.index for p in verify_chain(VM, [records[0], records[2]], keys)] == [1]
    assert {p.index for p in verify_chain(VM, [records[1], records[0], records[2]], keys)} == {0, 1, 2}


def test_a_record_of_an_untrusted_key_or_another_vm_fails():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    records = _chain(key, ["create"])
    assert (
        "not trusted for host 'h1'"
        in verify_chain(VM, records, {"h1": [public_key_text(other.public_key())]})[0].message
    )
    # A record re-signed by another host's key under this host's name.
    forged = copy.deepcopy(records)
    forged[0] = sign(other, {**forged[0]["payload"], "key": public_key_text(other.public_key())})
    assert verify_chain(
        VM, forged, {"h1": [public_key_text(key.public_key())], "h2": [public_key_text(other.public_key())]}
    )
    assert (
        "signed for VM" in verify_chain("another-vm", records, {"h1": [public_key_text(key.public_key())]})[0].message
    )


def test_a_signature_swapped_from_another_record_fails():
    key = Ed25519PrivateKey.generate()
    records = _chain(key, ["create", "stop"])
    records[1]["signature"] = records[0]["signature"]
    assert [p.index for p in verify_chain(VM, records, {"h1": [public_key_text(key.public_key())]})] == [1]


def test_the_worker_key_is_made_once_and_private(tmp_path):
    path = signing_key_path(tmp_path, "h1")
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_or_create_key(path)
    assert public_key_text(first.public_key()) == public_key_text(again.public_key())
    assert attestation.fingerprint(public_key_text(first.public_key())).startswith("SHA256:")


def _signed(key: Ed25519PrivateKey, operation: str, job: str, prev: str | None, host: str, details: dict) -> dict:
    return sign(key, {**_payload(key, operation, job, prev, host), "details": details})


def test_a_migration_is_signed_out_by_its_source_and_in_by_its_target():
    """create and migrate_out on h1, migrate_in and what follows on h2: each record checked against its own host's
    key, the arrival only where the departure said the VM went."""
    h1, h2, h3 = (Ed25519PrivateKey.generate() for _ in range(3))
    keys = {name: [public_key_text(k.public_key())] for name, k in (("h1", h1), ("h2", h2), ("h3", h3))}
    steps = [
        (h1, "create", "h1", {}),
        (h1, "migrate_out", "h1", {"live": True, "target": "h2"}),
        (h2, "migrate_in", "h2", {"from_host": "h1", "migrate_job": "job-1"}),
        (h2, "stop", "h2", {}),
    ]
    records, prev = [], None
    for n, (key, operation, host, details) in enumerate(steps):
        records.append(_signed(key, operation, f"job-{n}", prev, host, details))
        prev = record_hash(records[-1]["payload"])
    assert verify_chain(VM, records, keys) == []

    # The arrival signed by h1 (as if the source vouched for both sides) is refused under h2's name...
    as_h2 = _signed(h1, "migrate_in", "job-2", records[2]["payload"]["prev"], "h2", steps[2][3])
    problems = verify_chain(VM, [*records[:2], as_h2], keys)
    assert [p.index for p in problems] == [2] and "not trusted for host 'h2'" in problems[0].message
    # ...and under its own name, since the VM left for h2.
    as_h1 = _signed(h1, "migrate_in", "job-2", records[2]["payload"]["prev"], "h1", steps[2][3])
    problems = verify_chain(VM, [*records[:2], as_h1], keys)
    assert [p.index for p in problems] == [2] and "the VM left for 'h2'" in problems[0].message
    # A third trusted host cannot claim the arrival either.
    as_h3 = _signed(h3, "migrate_in", "job-2", records[2]["payload"]["prev"], "h3", steps[2][3])
    assert [p.index for p in verify_chain(VM, [*records[:2], as_h3], keys)] == [2]
    # With the departure missing (its record was refused), the arrival is checked by its key and link only.
    assert [p.index for p in verify_chain(VM, [records[0], *records[2:]], keys)] == [1]
    assert verify_chain(VM, records[2:], keys, prev=records[2]["payload"]["prev"]) == []
