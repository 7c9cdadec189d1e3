"""Initial schema: batches, domains, jobs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Self-contained on purpose (no imports from domainscan): a migration must keep producing the same
schema after the application's table definitions move on.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_DOMAIN = sa.String(260).with_variant(sa.String(260, collation="C"), "postgresql")


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("options", _JSON, nullable=False),
        _counter("total"),
        _counter("ok"),
        _counter("failed"),
        _counter("invalid"),
        _counter("duplicates"),
        _timestamp("created_at", nullable=False),
        _timestamp("finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
        sa.CheckConstraint(
            "status IN ('running', 'complete', 'interrupted', 'failed')", name=op.f("ck_batches_status")
        ),
    )
    op.create_index("ix_batches_tenant_id", "batches", ["tenant", "id"])

    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("domain", _DOMAIN, nullable=False),
        _timestamp("first_seen_at", nullable=False),
        _timestamp("last_scanned_at"),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        _counter("scans"),
        sa.Column("record", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_domains"),
        sa.UniqueConstraint("tenant", "domain", name="uq_domains_tenant_domain"),
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=True),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("started_at"),
        _timestamp("finished_at"),
        sa.Column("elapsed_ms", sa.Integer(), nullable=True),
        sa.Column("result", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name="fk_jobs_batch_id_batches"),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], name="fk_jobs_domain_id_domains"),
        sa.UniqueConstraint("batch_id", "domain_id", name="uq_jobs_batch_id_domain_id"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_jobs_status")
        ),
    )
    op.create_index("ix_jobs_tenant_batch_id_status", "jobs", ["tenant", "batch_id", "status"])
    op.create_index("ix_jobs_tenant_domain_id", "jobs", ["tenant", "domain_id"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("domains")
    op.drop_table("batches")
