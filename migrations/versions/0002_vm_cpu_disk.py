"""vms: CPU mode, disk format, firmware, snapshot chain kind

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpu_mode", sa.String(length=32), nullable=False, server_default="host-model"))
        batch_op.add_column(sa.Column("cpu_mode_effective", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("disk_format", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("firmware", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("snapshot_kind", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vms", schema=None) as batch_op:
        for column in ("snapshot_kind", "firmware", "disk_format", "cpu_mode_effective", "cpu_mode"):
            batch_op.drop_column(column)
