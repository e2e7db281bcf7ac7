"""A live VM's name is unique (a partial unique index, so concurrent creates cannot both take it); an
Idempotency-Key is reserved before its request runs, so its row exists without a response while in flight

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LIVE = sa.text("state <> 'deleted'")


def _rename_duplicates() -> None:
    """Concurrent creates could leave two live VMs of one name before this index: the oldest keeps it, the
    others get their id's first 8 characters appended so the index can be built (their domains are found by
    UUID, not name)."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, name FROM vms WHERE state <> 'deleted' ORDER BY name, created_at, id")
    ).fetchall()
    seen: set[str] = set()
    for vm_id, name in rows:
        if name in seen:
            new = f"{name[:54]}-{vm_id[:8]}"
            conn.execute(sa.text("UPDATE vms SET name = :new WHERE id = :id"), {"new": new, "id": vm_id})
        seen.add(name)


def upgrade() -> None:
    _rename_duplicates()
    op.create_index("uq_vms_live_name", "vms", ["name"], unique=True, sqlite_where=LIVE, postgresql_where=LIVE)
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.alter_column("status", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("body", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys WHERE status IS NULL")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.alter_column("status", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("body", existing_type=sa.JSON(), nullable=False)
    op.drop_index("uq_vms_live_name", table_name="vms")
