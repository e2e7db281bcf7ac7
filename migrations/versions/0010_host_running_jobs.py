"""hosts.running_jobs: the jobs a host's worker has claimed and not finished, from its heartbeats; the
conductor resumes none of them

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("running_jobs", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("running_jobs")
