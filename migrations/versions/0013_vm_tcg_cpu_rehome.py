"""vms.tcg_cpu: an admin-approved TCG CPU for this VM instead of archq's default; vms.rehome: "manual" (the VM
offers a move to a native host) or "auto" (moved at its next stop)

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("tcg_cpu", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("rehome", sa.String(length=16), nullable=False, server_default="manual"))


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("rehome")
        batch.drop_column("tcg_cpu")
