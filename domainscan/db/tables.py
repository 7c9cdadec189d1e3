"""The tables, as SQLAlchemy Core. The migrations create exactly these (a test compares them).

Core rather than ORM models: the repository only runs bulk statements and hands out dataclasses from
``domainscan.models``, so there is no identity map, lazy loading or MissingGreenlet to worry about.
Every table carries ``tenant`` and every index that serves a query starts with it.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from domainscan.db.types import DomainName, JSONType, UTCDateTime

BATCH_STATUSES = ("running", "complete", "interrupted", "failed")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _counter(name: str) -> Column[int]:
    return Column(name, Integer, nullable=False, default=0, server_default=text("0"))


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=column)


batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("source", Text, nullable=False),
    Column("options", JSONType, nullable=False),
    _counter("total"),
    _counter("ok"),
    _counter("failed"),
    _counter("invalid"),
    _counter("duplicates"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    # Refreshed by every write of the running process (and by its idle heartbeat): a running batch whose
    # heartbeat is old belongs to a process that died (migration 0002).
    Column("heartbeat_at", UTCDateTime),
    Index(None, "tenant", "id"),
    _one_of("status", BATCH_STATUSES),
)

domains = Table(
    "domains",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("domain", DomainName, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_scanned_at", UTCDateTime),
    # Not a foreign key: jobs already references domains, and the latest facts stand on their own.
    Column("last_job_id", Integer),
    Column("status", String(16)),
    Column("error_kind", String(32)),
    Column("http_status", Integer),
    Column("url", Text),
    Column("title", Text),
    _counter("scans"),
    Column("record", JSONType),
    UniqueConstraint("tenant", "domain"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("domain_id", Integer, ForeignKey("domains.id")),  # NULL for invalid inputs
    Column("input", Text, nullable=False),
    Column("line", Integer),
    Column("source", Text),
    Column("status", String(16), nullable=False),
    Column("error_kind", String(32)),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("elapsed_ms", Integer),
    Column("result", JSONType),
    # A running job is leased to one process until lease_expires_at (migration 0002): a resume takes
    # back only jobs whose lease has expired, so no domain is scanned twice.
    Column("lease_owner", String(128)),
    Column("lease_expires_at", UTCDateTime),
    # A domain is scanned once per batch; rows with a NULL domain_id never collide.
    UniqueConstraint("batch_id", "domain_id"),
    # Serves counting a batch's jobs by status and keyset paging of its queued jobs by id (PostgreSQL
    # does not append the primary key to an index as SQLite does with the rowid).
    Index(None, "tenant", "batch_id", "status", "id"),
    Index(None, "tenant", "domain_id"),
    _one_of("status", JOB_STATUSES),
)

# The sitemap scan's latest findings per domain (migration 0003): one row per sitemap file fetched, and,
# with --store-urls, one per page URL. A rescan updates rows in place and deletes those it no longer
# found; the unique constraints serve the upserts and, by their (tenant, domain_id) prefix, every read
# and delete of one domain's rows.
sitemap_files = Table(
    "sitemap_files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("kind", String(16)),  # urlset | sitemapindex | text | html, or NULL: nothing usable came back
    Column("found_by", String(16)),  # robots | link | probe | index
    _counter("url_count"),
    Column("newest_lastmod", UTCDateTime),
    Column("oldest_lastmod", UTCDateTime),
    Column("http_status", Integer),
    Column("error", Text),
    Column("capped", Boolean, nullable=False, default=False, server_default=false()),
    Column("scanned_at", UTCDateTime, nullable=False),  # the scan that last found the file
    UniqueConstraint("tenant", "domain_id", "url"),
)

sitemap_urls = Table(
    "sitemap_urls",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False),
    Column("loc", Text, nullable=False),
    Column("lastmod", UTCDateTime),
    Column("changefreq", String(16)),
    Column("priority", Float),
    Column("scanned_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant", "domain_id", "loc"),
)
