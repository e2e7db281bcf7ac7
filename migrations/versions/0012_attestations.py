"""attestations: signed records of VM operations, one hash chain per VM; hosts.signing_keys and
hosts.offered_signing_key: the attestation keys pinned for a host and a changed one waiting for an admin

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("signing_keys", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("offered_signing_key", sa.String(64), nullable=True))
    op.create_table(
        "attestations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("vm_id", sa.String(36), sa.ForeignKey("vms.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("vm_id", "seq"),
    )
    op.create_index("ix_attestations_vm_id", "attestations", ["vm_id"])
    op.create_index("ix_attestations_job_id", "attestations", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_attestations_job_id", "attestations")
    op.drop_index("ix_attestations_vm_id", "attestations")
    op.drop_table("attestations")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("offered_signing_key")
        batch.drop_column("signing_keys")
