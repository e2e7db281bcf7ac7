"""snapshots table; hosts' libvirt version and snapshot support; jobs' progress

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("vm_id", sa.String(length=36), sa.ForeignKey("vms.id"), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("memory", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("last_job_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("vm_id", "name"),
    )
    op.create_index("ix_snapshots_vm_id", "snapshots", ["vm_id"])
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("libvirt_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("snapshot_support", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("progress")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("snapshot_support")
        batch_op.drop_column("libvirt_version")
    op.drop_index("ix_snapshots_vm_id", "snapshots")
    op.drop_table("snapshots")
