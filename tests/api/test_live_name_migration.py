"""Migration 0009 on a database that concurrent creates left with two live VMs of one name (possible before
it): the oldest keeps the name, the other is renamed so the unique index on live names can be built, and a
deleted VM keeps its name."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from migrations import upgrade
from tests.support.databases import KINDS, fresh_database

VM = (
    "INSERT INTO vms (id, name, arch, vcpus, memory_mib, image, state, emulation, desired_state, restart_policy,"
    " emulated, emulation_warning, created_at, updated_at) VALUES (:id, :name, 'amd64', 1, 128, 'tiny', :state,"
    " 'prefer_native', 'running', 'never', false, '', :at, :at)"
)


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_live_names_are_renamed_and_then_refused(kind: str, tmp_path: Path):
    with fresh_database(kind, tmp_path) as url:
        upgrade(url, "0008")
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                for vm_id, state, at in [
                    ("11111111-aaaa", "running", "2026-01-01 00:00:00"),
                    ("22222222-bbbb", "failed", "2026-01-02 00:00:00"),
                    ("33333333-cccc", "deleted", "2026-01-03 00:00:00"),
                ]:
                    conn.execute(sa.text(VM), {"id": vm_id, "name": "web", "state": state, "at": at})
            upgrade(url)
            with engine.connect() as conn:
                names = dict(conn.execute(sa.text("SELECT id, name FROM vms")).fetchall())
            assert names == {"11111111-aaaa": "web", "22222222-bbbb": "web-22222222", "33333333-cccc": "web"}
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                conn.execute(sa.text(VM), {"id": "4", "name": "web", "state": "pending", "at": "2026-01-04"})
        finally:
            engine.dispose()
