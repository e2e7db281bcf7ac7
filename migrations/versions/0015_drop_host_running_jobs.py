"""hosts.running_jobs goes: the jobs a worker's runs hold now travel with its liveness marks in Redis
(queues/liveness.py), which the conductor reads when it judges a lapsed lease; the column, written by full
heartbeats that wait in the control queue, could be older than the mark that said the host was alive.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("running_jobs")


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("running_jobs", sa.JSON(), nullable=False, server_default="[]"))
