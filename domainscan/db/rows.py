"""Rows to dataclasses: what the repository's reads hand back instead of SQLAlchemy rows.

The read methods of :class:`domainscan.db.repository.Repository` select with :func:`job_select` (a job
with its domain's name) or whole ``batches``/``domains`` rows, and turn each row into the plain
dataclass of :mod:`domainscan.models` that the rest of domainscan sees: timestamps as ISO 8601 text,
a domain's record in the output's field order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, select

from domainscan.db.tables import domains, jobs
from domainscan.db.types import to_iso
from domainscan.models import RECORD_FIELDS, SITEMAP_FIELDS, BatchInfo, DomainInfo, JobInfo


def job_select() -> Select[Any]:
    return select(
        jobs.c.id,
        jobs.c.tenant,
        jobs.c.batch_id,
        domains.c.domain,
        jobs.c.input,
        jobs.c.line,
        jobs.c.source,
        jobs.c.status,
        jobs.c.error_kind,
        jobs.c.error,
        jobs.c.created_at,
        jobs.c.started_at,
        jobs.c.finished_at,
        jobs.c.elapsed_ms,
    ).select_from(
        jobs.outerjoin(domains, and_(domains.c.id == jobs.c.domain_id, domains.c.tenant == jobs.c.tenant))
    )


def job_info(row: Row[Any]) -> JobInfo:
    return JobInfo(
        id=row.id,
        tenant=row.tenant,
        batch_id=row.batch_id,
        domain=row.domain,
        input=row.input,
        line=row.line,
        source=row.source,
        status=row.status,
        error_kind=row.error_kind,
        error=row.error,
        created_at=to_iso(row.created_at),
        started_at=_iso(row.started_at),
        finished_at=_iso(row.finished_at),
        elapsed_ms=row.elapsed_ms,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else to_iso(value)


def batch_info(row: Row[Any], now: datetime, stale_after: float) -> BatchInfo:
    """A batch row; stale if it is running and gave no sign of life for more than ``stale_after`` s."""
    last_sign = row.heartbeat_at or row.created_at  # batches from before migration 0002 have no heartbeat
    return BatchInfo(
        id=row.id,
        tenant=row.tenant,
        status=row.status,
        source=row.source,
        options=dict(row.options),
        total=row.total,
        ok=row.ok,
        failed=row.failed,
        invalid=row.invalid,
        duplicates=row.duplicates,
        created_at=to_iso(row.created_at),
        finished_at=_iso(row.finished_at),
        heartbeat_at=_iso(row.heartbeat_at),
        stale=row.status == "running" and (now - last_sign).total_seconds() > stale_after,
    )


def domain_info(row: Row[Any]) -> DomainInfo:
    return DomainInfo(
        domain=row.domain,
        tenant=row.tenant,
        status=row.status,
        error_kind=row.error_kind,
        http_status=row.http_status,
        title=row.title,
        url=row.url,
        first_seen_at=to_iso(row.first_seen_at),
        last_scanned_at=_iso(row.last_scanned_at),
        scans=row.scans,
        record=_in_record_order(row.record or {}),
    )


def _in_record_order(record: dict[str, Any]) -> dict[str, Any]:
    """JSONB keeps keys in its own order; give the record back in the output's field order."""
    ordered = {name: record[name] for name in (*RECORD_FIELDS, *SITEMAP_FIELDS) if name in record}
    return ordered | record
