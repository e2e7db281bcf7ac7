"""Usable guests: each VM's network, MAC, first-boot configuration, disk size, addresses and SSH host keys;
each host's networks and bridges

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _vm_columns() -> list[sa.Column]:
    return [
        sa.Column("network", sa.JSON(), nullable=False, server_default='{"mode": "none"}'),
        sa.Column("mac", sa.String(length=17), nullable=True),
        sa.Column("hostname", sa.String(length=253), nullable=True),
        sa.Column("ssh_authorized_keys", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("user_data", sa.Text(), nullable=True),
        sa.Column("user_data_sha256", sa.String(length=64), nullable=True),
        sa.Column("user_data_size", sa.Integer(), nullable=True),
        sa.Column("disk_gib", sa.Integer(), nullable=True),
        sa.Column("addresses", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("addresses_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ssh_host_keys", sa.JSON(), nullable=False, server_default="[]"),
    ]


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        for column in _vm_columns():
            batch.add_column(column)
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("networks", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("networks")
    with op.batch_alter_table("vms") as batch:
        for column in reversed(_vm_columns()):
            batch.drop_column(column.name)
