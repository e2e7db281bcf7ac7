"""vm_events: what happened to a VM outside its jobs (console sessions), with its actor

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vm_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("vm_id", sa.String(36), sa.ForeignKey("vms.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_vm_events_vm_id", "vm_events", ["vm_id"])


def downgrade() -> None:
    op.drop_index("ix_vm_events_vm_id", table_name="vm_events")
    op.drop_table("vm_events")
