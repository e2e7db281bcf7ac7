"""Migration 0014 on a database with data from 0010: tokens, VMs (live and deleted), jobs, snapshots and
idempotency keys all move into `default`, whose usage counts its live VMs; live names are then unique within
a project only."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from migrations import upgrade
from tests.support.databases import KINDS, fresh_database

AT = "2026-01-01 00:00:00"
VM = (
    "INSERT INTO vms (id, {project}name, arch, vcpus, memory_mib, image, state, emulation, desired_state,"
    " restart_policy, emulated, emulation_warning, created_at, updated_at) VALUES (:id, {value}:name, 'amd64',"
    " :vcpus, :memory, 'tiny', :state, 'prefer_native', 'running', 'never', :emulated, '', :at, :at)"
)
ROWS = [
    "INSERT INTO api_tokens (id, name, role, secret_sha256, created_at) VALUES ('t1', 'admin', 'admin', 'aa', :at)",
    "INSERT INTO api_tokens (id, name, role, secret_sha256, created_at) VALUES ('t2', 'ci', 'viewer', 'bb', :at)",
    "INSERT INTO jobs (id, kind, state, queue, vm_id, task, payload, token, attempts, emulated, waiting_for, result,"
    " created_at, version) VALUES ('j1', 'create', 'succeeded', 'amd64', 'vm-1', 'archq.vm.create', '{}', 'tok', 1,"
    " false, '', '{}', :at, 1)",
    "INSERT INTO snapshots (vm_id, name, memory, kind, state, job_id, created_at) VALUES ('vm-1', 'before', true,"
    " 'internal', 'ready', 'j1', :at)",
    "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) VALUES ('k1', 'f', 202, '{}', :at)",
]


@pytest.mark.parametrize("kind", KINDS)
def test_what_exists_moves_into_the_default_project(kind: str, tmp_path: Path):
    with fresh_database(kind, tmp_path) as url:
        upgrade(url, "0010")
        engine = sa.create_engine(url)
        try:
            vm = VM.format(project="", value="")
            with engine.begin() as conn:
                for vm_id, state, vcpus, memory, emulated in [
                    ("vm-1", "running", 2, 256, False),
                    ("vm-2", "failed", 1, 128, True),
                    ("vm-3", "deleted", 8, 4096, True),
                ]:
                    conn.execute(
                        sa.text(vm),
                        {"id": vm_id, "name": "web" if vm_id != "vm-2" else "db", "state": state, "vcpus": vcpus,
                         "memory": memory, "emulated": emulated, "at": AT},
                    )  # fmt: skip
                for row in ROWS:
                    conn.execute(sa.text(row), {"at": AT})
            upgrade(url)
            with engine.connect() as conn:
                for table in ("api_tokens", "vms", "jobs", "snapshots", "idempotency_keys"):
                    projects = conn.execute(sa.text(f"SELECT DISTINCT project FROM {table}")).scalars().all()
                    assert projects == ["default"], table
                used = conn.execute(
                    sa.text("SELECT used_vms, used_vcpus, used_memory_mib, used_emulated, max_vms FROM projects")
                ).all()
            # The deleted VM holds nothing; the failed one holds its share until it is deleted.
            assert used == [(2, 3, 384, 1, None)]

            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO projects (name) VALUES ('blue')"))
                with_project = VM.format(project="project, ", value="'blue', ")
                values = {"name": "web", "state": "pending", "vcpus": 1, "memory": 128, "emulated": False, "at": AT}
                conn.execute(sa.text(with_project), {**values, "id": "vm-4"})
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                conn.execute(sa.text(with_project), {**values, "id": "vm-5"})
        finally:
            engine.dispose()
