"""Leases on running jobs, a heartbeat on batches, and an index for paging a batch's queued jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Self-contained on purpose (no imports from domainscan), like 0001. Every new column is nullable, so
adding it is a catalog change on PostgreSQL and a plain ALTER TABLE ADD COLUMN on SQLite; existing
rows read as "no lease" and "no heartbeat yet".
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamp(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_owner", sa.String(128), nullable=True))
    op.add_column("jobs", _timestamp("lease_expires_at"))
    op.add_column("batches", _timestamp("heartbeat_at"))
    # (tenant, batch_id, status, id) serves everything (tenant, batch_id, status) did, and also the
    # keyset paging of a batch's queued jobs by id.
    op.drop_index("ix_jobs_tenant_batch_id_status", table_name="jobs")
    op.create_index("ix_jobs_tenant_batch_id_status_id", "jobs", ["tenant", "batch_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_batch_id_status_id", table_name="jobs")
    op.create_index("ix_jobs_tenant_batch_id_status", "jobs", ["tenant", "batch_id", "status"])
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
