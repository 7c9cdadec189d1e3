"""Sitemap files and (optionally stored) sitemap page URLs, per tenant and domain.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01

Self-contained on purpose (no imports from domainscan), like 0001 and 0002. Two new tables, nothing
changed in the old ones, so the upgrade is quick on a database of any size.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sitemap_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("found_by", sa.String(16), nullable=True),
        sa.Column("url_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        _timestamp("newest_lastmod"),
        _timestamp("oldest_lastmod"),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("capped", sa.Boolean(), nullable=False, server_default=sa.false()),
        _timestamp("scanned_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sitemap_files"),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], name="fk_sitemap_files_domain_id_domains"),
        sa.UniqueConstraint("tenant", "domain_id", "url", name="uq_sitemap_files_tenant_domain_id_url"),
    )
    op.create_table(
        "sitemap_urls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("loc", sa.Text(), nullable=False),
        _timestamp("lastmod"),
        sa.Column("changefreq", sa.String(16), nullable=True),
        sa.Column("priority", sa.Float(), nullable=True),
        _timestamp("scanned_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sitemap_urls"),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], name="fk_sitemap_urls_domain_id_domains"),
        sa.UniqueConstraint("tenant", "domain_id", "loc", name="uq_sitemap_urls_tenant_domain_id_loc"),
    )


def downgrade() -> None:
    op.drop_table("sitemap_urls")
    op.drop_table("sitemap_files")
