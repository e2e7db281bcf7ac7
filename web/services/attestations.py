"""Attestations on the control plane: the hosts' pinned signing keys, checking and storing the records workers
sign, and a VM's chain as the API shows it. The conductor only stores what a host signed with its pinned key and
what extends the VM's chain; it cannot make a record (it holds no host's key)."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select

from queues import attestation
from queues.vocabulary import JobState
from web.errors import Conflict, NotFound
from web.extensions import db
from web.models import Attestation, Host, Job, Vm
from web.services.job_states import note

log = logging.getLogger(__name__)


def observe_key(host: Host, key: str | None) -> None:
    """A heartbeat's key: pinned if the host has none yet, flagged if it differs from the pinned one (like an
    SSH host key, it is refused until an admin accepts it)."""
    if not key:
        return
    if not host.signing_keys:
        host.signing_keys = [key]
        log.info("host %s: pinned its signing key %s", host.name, attestation.fingerprint(key))
    elif key != host.signing_keys[-1] and key != host.offered_signing_key:
        host.offered_signing_key = key
        log.warning(
            "host %s: its signing key changed to %s; its attestations are refused until an admin runs "
            "`archq host trust-key %s`",
            host.name,
            attestation.fingerprint(key),
            host.name,
        )


def trust_key(name: str, fingerprint: str) -> Host:
    """Accept the key a host now offers, if it is the one the admin checked (its fingerprint)."""
    host = db.session.get(Host, name)
    if host is None:
        raise NotFound(f"no host named {name!r} has ever sent a heartbeat")
    offered = host.offered_signing_key
    if offered is None:
        raise Conflict(f"host {name} offers no new signing key", code="no_offered_key")
    if attestation.fingerprint(offered) != fingerprint:
        raise Conflict(
            f"host {name} offers key {attestation.fingerprint(offered)}, not {fingerprint}",
            code="fingerprint_mismatch",
            fields={"fingerprint": [attestation.fingerprint(offered)]},
        )
    host.signing_keys = [*host.signing_keys, offered]
    host.offered_signing_key = None
    db.session.commit()
    return host


def key_view(host: Host) -> dict:
    """How the API shows a host's keys: fingerprints only (the keys are in a VM's chain)."""
    return {
        "fingerprint": attestation.fingerprint(host.signing_keys[-1]) if host.signing_keys else None,
        "offered": attestation.fingerprint(host.offered_signing_key) if host.offered_signing_key else None,
    }


def _last(vm_id: str) -> Attestation | None:
    return db.session.scalar(
        select(Attestation).where(Attestation.vm_id == vm_id).order_by(Attestation.seq.desc()).limit(1)
    )


def chain_head(vm_id: str) -> str | None:
    """The hash a new job of this VM links its record to."""
    last = _last(vm_id)
    return last.hash if last else None


def store(job: Job, vm: Vm, host_name: str, record: dict | None) -> None:
    """Store the record a `succeeded` report carries, in the report's transaction; a record that does not
    verify is refused (noted on the job, logged), never stored."""
    if record is None:
        note(job, f"worker:{host_name}", "no attestation: the host signed no record of this operation")
        return
    host = db.session.get(Host, host_name)
    payload = record.get("payload") if isinstance(record.get("payload"), dict) else {}
    if host is not None and isinstance(payload.get("key"), str):
        # Pinned here if this report overtook the host's first heartbeat; flagged if it is not the pinned key.
        observe_key(host, payload["key"])
    trusted = host.signing_keys[-1:] if host is not None else []
    last = _last(vm.id)
    head = last.hash if last else None
    problems = [str(p) for p in attestation.verify_chain(vm.id, [record], {host_name: trusted}, prev=head)]
    if payload.get("job_id") != job.id:
        problems.append(f"signed for job {payload.get('job_id')}, not {job.id}")
    if problems:
        log.warning("job %s: attestation from %s refused: %s", job.id, host_name, "; ".join(problems))
        note(job, "conductor", "attestation refused: " + "; ".join(problems))
        return
    db.session.add(
        Attestation(
            vm_id=vm.id,
            seq=last.seq + 1 if last else 0,
            job_id=job.id,
            host=host_name,
            operation=payload["operation"],
            payload=attestation.canonical_json(payload).decode(),
            signature=record["signature"],
            hash=attestation.record_hash(payload),
        )
    )


def chain(vm: Vm) -> dict:
    """The VM's records in chain order, the keys the control plane trusts for the hosts that signed them, and the
    VM's succeeded jobs that have no record."""
    rows = db.session.scalars(select(Attestation).where(Attestation.vm_id == vm.id).order_by(Attestation.seq))
    records = [
        {"seq": row.seq, "hash": row.hash, "payload": json.loads(row.payload), "signature": row.signature}
        for row in rows
    ]
    names = sorted({r["payload"].get("host") for r in records if isinstance(r["payload"].get("host"), str)})
    keys = {h.name: list(h.signing_keys) for h in db.session.scalars(select(Host).where(Host.name.in_(names)))}
    # Jobs that succeeded with no record (refused, or done with no host): the chain cannot show that it skips them.
    attested = {r["payload"].get("job_id") for r in records}
    unattested = [
        job_id
        for job_id in db.session.scalars(
            select(Job.id).where(Job.vm_id == vm.id, Job.state == JobState.SUCCEEDED).order_by(Job.created_at)
        )
        if job_id not in attested
    ]
    return {
        "vm_id": vm.id,
        "format": attestation.FORMAT,
        "records": records,
        "keys": keys,
        "unattested_jobs": unattested,
    }
