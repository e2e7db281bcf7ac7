"""Projects with quotas: every token, VM, job, snapshot and idempotency key belongs to one; what existed moves
into `default`, whose usage is counted from its live VMs. Live VM names are unique within a project.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

DEFAULT = "default"
LIVE = sa.text("state <> 'deleted'")


def _project_column(foreign_key: bool = False) -> sa.Column:
    args = [sa.ForeignKey("projects.name", name="fk_project")] if foreign_key else []
    return sa.Column("project", sa.String(63), *args, nullable=False, server_default=DEFAULT)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("max_vms", sa.Integer(), nullable=True),
        sa.Column("max_vcpus", sa.Integer(), nullable=True),
        sa.Column("max_memory_mib", sa.Integer(), nullable=True),
        sa.Column("max_emulated", sa.Integer(), nullable=True),
        sa.Column("used_vms", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used_vcpus", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used_memory_mib", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used_emulated", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # `default` holds what its live VMs hold: the counters a create's reservation starts from.
    op.execute(
        sa.text(
            "INSERT INTO projects (name, used_vms, used_vcpus, used_memory_mib, used_emulated) "
            "SELECT :name, COUNT(*), COALESCE(SUM(vcpus), 0), COALESCE(SUM(memory_mib), 0), "
            "COALESCE(SUM(CASE WHEN emulated THEN 1 ELSE 0 END), 0) FROM vms WHERE state <> 'deleted'"
        ).bindparams(name=DEFAULT)
    )
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(_project_column(foreign_key=True))
    op.drop_index("uq_vms_live_name", table_name="vms")
    with op.batch_alter_table("vms") as batch:
        batch.add_column(_project_column(foreign_key=True))
    op.create_index("ix_vms_project", "vms", ["project"])
    op.create_index(
        "uq_vms_live_name", "vms", ["project", "name"], unique=True, sqlite_where=LIVE, postgresql_where=LIVE
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(_project_column())
    op.create_index("ix_jobs_project", "jobs", ["project"])
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(_project_column())
    _idempotency_keys_per_project()


def _idempotency_keys_per_project() -> None:
    """The key becomes (project, key): a new table, the rows copied (a primary key is not altered in place on
    SQLite, and the table holds 24 h of keys at most)."""
    op.create_table(
        "idempotency_keys_new",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("location", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        sa.text(
            "INSERT INTO idempotency_keys_new (project, key, fingerprint, status, body, location, created_at) "
            "SELECT :name, key, fingerprint, status, body, location, created_at FROM idempotency_keys"
        ).bindparams(name=DEFAULT)
    )
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.rename_table("idempotency_keys_new", "idempotency_keys")
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    raise NotImplementedError("0014 moves rows into projects; restore the backup taken before upgrading instead")
