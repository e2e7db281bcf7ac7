"""Placement that stays flat in the number of hosts: the hosts' capacity, load and routing facts as indexed
columns (web/services/capacity.py). Every heartbeat fills them, so they are right one interval after upgrade.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_hosts_least_loaded": ["arch", "drained", "load", "name"],
    "ix_hosts_best_fit": ["arch", "drained", "free_memory_mib", "name"],
    "ix_hosts_round_robin": ["arch", "drained", "placed_at", "name"],
    "ix_hosts_random": ["arch", "drained", "shuffle"],
    "ix_hosts_profile": ["drained", "last_seen", "profile"],
}


def _columns() -> list[sa.Column]:
    return [
        sa.Column("profile", sa.Text(), nullable=False, server_default=""),
        sa.Column("emulates", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("offers", sa.Text(), nullable=False, server_default=""),
        sa.Column("cpu_modes_own", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("vcpus", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("memory_mib", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("free_vcpus", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("free_memory_mib", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("free_disk_mib", sa.Integer(), nullable=True),
        sa.Column("load", sa.Float(), nullable=False, server_default="0"),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False, server_default="1970-01-01 00:00:00+00:00"),
        sa.Column("shuffle", sa.Float(), nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        for column in _columns():
            batch.add_column(column)
    for name, columns in INDEXES.items():
        op.create_index(name, "hosts", columns)


def downgrade() -> None:
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="hosts")
    with op.batch_alter_table("hosts") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
