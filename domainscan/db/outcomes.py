"""Storing outcomes: what finish_jobs and import_records write when jobs get their outcome.

An :class:`Outcome` is one job's, taken from its output record (a ScanResult's, or a spooled one).
:func:`finish` gives jobs of one batch theirs inside the caller's transaction: each job its terminal
state, each scanned domain its latest facts, one more scan and its sitemap rows, the batch its counters.
It locks rows in the order set out in the docstring of :mod:`domainscan.db.repository`: domains, then
their sitemap rows, then jobs, the batch row last.

A domain's latest facts are only replaced by a scan that is not older than the stored one (a guard on
``last_scanned_at``): two batches may scan a domain at the same time and finish in either order. Its
sitemap rows follow its latest facts: written (upserted, and rows the scan no longer found deleted)
only by the scan whose facts the domain row now holds.

The UPDATEs of jobs and domains are written once and sent per dialect (:data:`STATEMENTS`): row by row
to SQLite, one statement per table over a JSON array of rows to PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, Update, any_, bindparam, case, column, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from domainscan.dates import parse_w3c_datetime
from domainscan.db.errors import TransientStorageError
from domainscan.db.jobs import bump_batch, chunked, counter_of
from domainscan.db.tables import domains, jobs, sitemap_files, sitemap_urls
from domainscan.db.types import UTCDateTime, parse_iso
from domainscan.errors import ErrorKind, StorageError
from domainscan.models import ScanResult, UrlEntry

NO_JOB = 0  # the job id of a spooled record whose input was never registered, until import gives it one
_TERMINAL = ("succeeded", "failed")  # a job with one of these has its outcome; cancelled is resumable
# URLs longer than this (in UTF-8 bytes) are not stored in the sitemap tables: the sitemap protocol
# allows 2,048 characters, and PostgreSQL's unique index would refuse a key of more than ~2,700 bytes.
MAX_STORED_URL = 2048
_CHANGEFREQS = frozenset({"always", "hourly", "daily", "weekly", "monthly", "yearly", "never"})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One job's outcome, taken from its output record (finish_jobs and import_records alike)."""

    job_id: int
    batch_id: int | None
    domain: str | None
    status: str  # the job's: succeeded | failed | cancelled
    error_kind: str | None
    error: str | None
    elapsed_ms: int | None
    scanned_at: datetime
    http_status: int | None
    url: str | None
    title: str | None
    record: dict[str, Any]
    sitemap_files: tuple[_SitemapFileRow, ...] | None = None  # None: sitemaps were not scanned
    urls: Sequence[UrlEntry] | None = None  # None: page URLs were not kept (only results have them)

    @classmethod
    def from_result(cls, result: ScanResult) -> Outcome:
        outcome = cls.from_record(result.to_record())
        if result.sitemap is not None and result.sitemap.urls is not None:
            return dataclasses.replace(outcome, urls=result.sitemap.urls)
        return outcome

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, adopt: bool = False) -> Outcome:
        """Raises KeyError, TypeError or ValueError for anything that is not an output record, or for
        a record without a job id unless `adopt` (its job_id is then NO_JOB, until it gets one)."""
        kind = _optional(record, "error_kind", str)
        if kind is not None:
            kind = ErrorKind(kind).value
        status = "succeeded" if kind is None else "cancelled" if kind == ErrorKind.CANCELLED else "failed"
        job_id = _optional(record, "job_id", int)
        if job_id is None:
            if not adopt or not isinstance(record.get("input"), str):
                raise ValueError("a record without a job")
            job_id = NO_JOB
        return cls(
            job_id=job_id,
            batch_id=_optional(record, "batch_id", int),
            domain=_optional(record, "domain", str),
            status=status,
            error_kind=kind,
            error=_optional(record, "error", str),
            elapsed_ms=_optional(record, "elapsed_ms", int),
            scanned_at=parse_iso(record["scanned_at"]),
            http_status=_optional(record, "http_status", int),
            url=_optional(record, "url", str),
            title=_optional(record, "title", str),
            record=dict(record),
            sitemap_files=_sitemap_files(record),
        )

    def finish_params(self, old_status: str, now: datetime) -> dict[str, Any]:
        return {
            "p_job_id": self.job_id,
            "p_old_status": old_status,
            "p_status": self.status,
            "p_finished_at": now,
            "p_elapsed_ms": self.elapsed_ms,
            "p_error_kind": self.error_kind,
            "p_error": self.error,
            "p_record": self.record,
        }

    def domain_params(self, domain_id: int) -> dict[str, Any]:
        return {
            "p_domain_id": domain_id,
            "p_scanned_at": self.scanned_at,
            "p_job_id": self.job_id,
            "p_status": "ok" if self.error_kind is None else "error",
            "p_error_kind": self.error_kind,
            "p_http_status": self.http_status,
            "p_url": self.url,
            "p_title": self.title,
            "p_record": self.record,
        }


def adopted_job_row(
    tenant: str, batch_id: int, outcome: Outcome, domain_id: int | None, now: datetime
) -> dict[str, Any]:
    """A job made on import for an input the scan could not register (queued: `finish` gives it its
    outcome in the same transaction). Its line and source were not recorded."""
    return {
        "tenant": tenant,
        "batch_id": batch_id,
        "domain_id": domain_id,
        "input": outcome.record["input"],
        "status": "queued",
        "created_at": now,
    }


@dataclass(frozen=True, slots=True)
class _SitemapFileRow:
    """One entry of a record's ``sitemap_files``, as the sitemap_files table stores it."""

    url: str
    kind: str | None
    found_by: str | None
    url_count: int
    newest_lastmod: datetime | None
    oldest_lastmod: datetime | None
    http_status: int | None
    error: str | None
    capped: bool


def _sitemap_files(record: Mapping[str, Any]) -> tuple[_SitemapFileRow, ...] | None:
    """A record's ``sitemap_files`` (None when it has none); TypeError when they are not what a scan
    writes."""
    files = record.get("sitemap_files")
    if files is None:
        return None
    if not isinstance(files, list):
        raise TypeError("sitemap_files is not a list")
    rows = []
    for file in files:
        if not isinstance(file, Mapping) or not isinstance(file.get("url"), str):
            raise TypeError("a sitemap_files entry without a url")
        newest, oldest = _optional(file, "newest_lastmod", str), _optional(file, "oldest_lastmod", str)
        rows.append(
            _SitemapFileRow(
                url=file["url"],
                kind=_short(_optional(file, "kind", str)),
                found_by=_short(_optional(file, "found_by", str)),
                url_count=_optional(file, "url_count", int) or 0,
                newest_lastmod=None if newest is None else parse_w3c_datetime(newest),
                oldest_lastmod=None if oldest is None else parse_w3c_datetime(oldest),
                http_status=_optional(file, "http_status", int),
                error=_optional(file, "error", str),
                capped=file.get("capped") is True,
            )
        )
    return tuple(rows)


def _short(value: str | None) -> str | None:
    return None if value is None else value[:16]


def _storable(url: str) -> bool:
    """Whether a URL fits the sitemap tables (see MAX_STORED_URL; PostgreSQL refuses NUL in text)."""
    return "\x00" not in url and len(url.encode("utf-8", "surrogatepass")) <= MAX_STORED_URL


def _optional(record: Mapping[str, Any], key: str, kind: type[_T]) -> _T | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


@dataclass(slots=True)
class Tally:
    finished: int = 0  # jobs this call gave their outcome
    already: int = 0  # jobs that had theirs (or a result named one twice)
    missing: int = 0  # results whose job is not in the batch (import_records skips those)


async def finish(
    conn: AsyncConnection,
    tenant: str,
    batch_id: int,
    outcomes: Sequence[Outcome],
    now: datetime,
    *,
    retry: bool,
    strict: bool,
) -> Tally:
    """Give jobs of one batch their outcome; see finish_jobs. ``strict``: a missing job is an error.

    Reads the jobs first (without locking them: domains are locked before jobs), then updates each
    domain and job; a job is updated only if its status is still the one read, and the batch's counters
    move by what the changed jobs left and entered. A job that changed in between (another process
    finishing it, say) aborts the transaction as transient, and the retry reads again.
    """
    tally = Tally()
    ids = sorted({outcome.job_id for outcome in outcomes})
    current: dict[int, Any] = {}
    for chunk in chunked(ids):
        stmt = (
            select(
                jobs.c.id,
                jobs.c.status,
                jobs.c.error_kind,
                jobs.c.domain_id,
                jobs.c.finished_at,
                domains.c.domain,
            )
            .select_from(jobs.outerjoin(domains, domains.c.id == jobs.c.domain_id))
            .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id, jobs.c.id.in_(chunk))
        )
        current.update((row.id, row) for row in await conn.execute(stmt))
    by_job: dict[int, Outcome] = {}
    for outcome in outcomes:
        row = current.get(outcome.job_id)
        # (A spool from another database may name job ids that exist here, for other domains.)
        if row is None or (not strict and row.domain != outcome.domain):
            tally.missing += 1
        elif outcome.job_id in by_job:
            tally.already += 1
        else:
            by_job[outcome.job_id] = outcome
    if strict and tally.missing:
        raise StorageError(
            f"{tally.missing} of {len(outcomes)} results name jobs that are not in batch {batch_id} "
            f"of tenant {tenant!r}; nothing was stored"
        )
    changes: list[tuple[Outcome, Any]] = []
    for job_id, outcome in sorted(by_job.items()):
        row = current[job_id]
        if row.status not in _TERMINAL:
            changes.append((outcome, row))
        elif retry and row.finished_at == now:  # finished by an attempt whose acknowledgement was lost
            tally.finished += 1
        else:
            tally.already += 1
    if not changes:
        if strict:
            await bump_batch(conn, tenant, batch_id, heartbeat_at=now)
        return tally
    # A stopped scan says nothing about the site: it must not replace what the last real scan found.
    scanned = sorted(
        ((o, row) for o, row in changes if row.domain_id is not None and o.status != "cancelled"),
        key=lambda change: str(change[1].domain),
    )
    finish_job, scan_domain = STATEMENTS[conn.dialect.name]
    if scanned:  # domains, then their sitemap rows, before jobs (see the module docstring)
        params = [o.domain_params(row.domain_id) for o, row in scanned]
        await scan_domain.run(conn, params, domains.c.tenant == tenant)
        await _store_sitemaps(conn, tenant, scanned)
    finished = await finish_job.run(
        conn,
        [o.finish_params(row.status, now) for o, row in changes],
        jobs.c.tenant == tenant,
        jobs.c.batch_id == batch_id,
    )
    if finished != len(changes):  # raising rolls the domain updates back too
        raise TransientStorageError(
            f"jobs of batch {batch_id} changed while their results were stored; trying again"
        )
    moves: Counter[str | None] = Counter()
    for outcome, row in changes:
        moves[counter_of(row.status, row.error_kind)] -= 1
        moves[counter_of(outcome.status, outcome.error_kind)] += 1
    moves.pop(None, None)
    await bump_batch(
        conn,
        tenant,
        batch_id,
        heartbeat_at=now if strict else None,
        **{str(name): n for name, n in moves.items() if n},
    )
    tally.finished += len(changes)
    return tally


async def _store_sitemaps(conn: AsyncConnection, tenant: str, scanned: Sequence[tuple[Outcome, Any]]) -> None:
    """Make the sitemap rows of the scanned domains what their scans found: a bulk upsert of the files
    (and of the page URLs, when kept), then a bulk delete of the rows the scan no longer found.

    Only for domains whose latest facts are now this scan's (the domain rows are locked by this
    transaction already, so that read is stable): an older scan finishing late changes nothing.
    `scanned` is sorted by domain name, and rows go in URL order within a domain: the lock order.
    """
    candidates = [(o, row) for o, row in scanned if o.sitemap_files is not None]
    if not candidates:
        return
    latest: dict[int, datetime | None] = {}
    for chunk in chunked(sorted({row.domain_id for _, row in candidates})):
        stmt = select(domains.c.id, domains.c.last_scanned_at).where(
            domains.c.tenant == tenant, domains.c.id.in_(chunk)
        )
        latest.update((row.id, row.last_scanned_at) for row in await conn.execute(stmt))
    files: list[dict[str, Any]] = []
    urls: list[dict[str, Any]] = []
    swept_files: list[dict[str, Any]] = []
    swept_urls: list[dict[str, Any]] = []
    for outcome, row in candidates:
        if latest.get(row.domain_id) != outcome.scanned_at:
            continue
        base = {"tenant": tenant, "domain_id": row.domain_id, "scanned_at": outcome.scanned_at}
        sweep = {"p_domain_id": row.domain_id, "p_scanned_at": outcome.scanned_at}
        swept_files.append(sweep)
        by_url = {f.url: f for f in outcome.sitemap_files or () if _storable(f.url)}
        for url in sorted(by_url):
            f = by_url[url]
            files.append(
                base
                | {
                    "url": url,
                    "kind": f.kind,
                    "found_by": f.found_by,
                    "url_count": f.url_count,
                    "newest_lastmod": f.newest_lastmod,
                    "oldest_lastmod": f.oldest_lastmod,
                    "http_status": f.http_status,
                    "error": f.error,
                    "capped": f.capped,
                }
            )
        if outcome.urls is not None:
            swept_urls.append(sweep)
            by_loc = {e.loc: e for e in outcome.urls if _storable(e.loc)}
            for loc in sorted(by_loc):
                entry = by_loc[loc]
                changefreq = entry.changefreq
                urls.append(
                    base
                    | {
                        "loc": loc,
                        "lastmod": None if entry.lastmod is None else parse_w3c_datetime(entry.lastmod),
                        "changefreq": changefreq if changefreq in _CHANGEFREQS else None,
                        "priority": entry.priority,
                    }
                )
    if files:
        await conn.execute(_upsert(conn, sitemap_files, "url"), files)
    if swept_files:
        await conn.execute(_sweep(sitemap_files, tenant), swept_files)
    if urls:
        await conn.execute(_upsert(conn, sitemap_urls, "loc"), urls)
    if swept_urls:
        await conn.execute(_sweep(sitemap_urls, tenant), swept_urls)


def _upsert(conn: AsyncConnection, table: Table, key: str) -> Any:
    """INSERT, or UPDATE every column of the row already there for (tenant, domain_id, `key`)."""
    stmt = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
    keys = [table.c.tenant, table.c.domain_id, table.c[key]]
    updated = {c.name: stmt.excluded[c.name] for c in table.c if c.name != "id" and c not in keys}
    return stmt.on_conflict_do_update(index_elements=keys, set_=updated)


def _sweep(table: Table, tenant: str) -> Any:
    """DELETE one domain's rows that an older scan wrote (executemany: p_domain_id, p_scanned_at)."""
    return delete(table).where(
        table.c.tenant == tenant,
        table.c.domain_id == bindparam("p_domain_id"),
        table.c.scanned_at < bindparam("p_scanned_at", type_=UTCDateTime()),
    )


# The two statements of `finish`, each written once over a source of per-row values (its `value(name)`):
# the parameters of an executemany (SQLite: row by row, in-process, cheap), or the columns of one JSON
# array of rows unpacked by the server (PostgreSQL: the whole flush in one statement). Row by row cost
# PostgreSQL a parse and a plan per row, since prepared statements are off for the poolers: a third of
# its CPU for a scan's writes (1.9 s against 1.3 s per 2000 results on the bench farm), and the client
# a round of parameter processing per row. Parameters are prefixed "p_" because SQLAlchemy reserves
# the column names for the SET clause.
_FINISH_COLUMNS: dict[str, Any] = {
    "p_job_id": jobs.c.id.type,
    "p_old_status": jobs.c.status.type,
    "p_status": jobs.c.status.type,
    "p_finished_at": jobs.c.finished_at.type,
    "p_elapsed_ms": jobs.c.elapsed_ms.type,
    "p_error_kind": jobs.c.error_kind.type,
    "p_error": jobs.c.error.type,
    "p_record": jobs.c.result.type,
}
_SCAN_COLUMNS: dict[str, Any] = {
    "p_domain_id": domains.c.id.type,
    "p_scanned_at": domains.c.last_scanned_at.type,
    "p_job_id": domains.c.last_job_id.type,
    "p_status": domains.c.status.type,
    "p_error_kind": domains.c.error_kind.type,
    "p_http_status": domains.c.http_status.type,
    "p_url": domains.c.url.type,
    "p_title": domains.c.title.type,
    "p_record": domains.c.record.type,
}


def _finish_job(value: Callable[[str], Any]) -> Update:
    """A job gets its outcome, if its status is still the one read (compare-and-set)."""
    return (
        update(jobs)
        .where(jobs.c.id == value("p_job_id"), jobs.c.status == value("p_old_status"))
        .values(
            status=value("p_status"),
            finished_at=value("p_finished_at"),
            elapsed_ms=value("p_elapsed_ms"),
            error_kind=value("p_error_kind"),
            error=value("p_error"),
            result=value("p_record"),
            lease_owner=None,
            lease_expires_at=None,
        )
    )


def _scan_domain(value: Callable[[str], Any]) -> Update:
    """One write per scanned domain: the scan counted, and its facts kept when they are the newest.
    (Two updates of the same row, a count and then the facts, cost PostgreSQL a row version each.)"""
    # This scan is the domain's newest (scans can finish out of order: an older one must not win).
    newest = or_(domains.c.last_scanned_at.is_(None), domains.c.last_scanned_at <= value("p_scanned_at"))

    def if_newest(column: Any, name: str) -> Any:
        return case((newest, value(name)), else_=column)

    return (
        update(domains)
        .where(domains.c.id == value("p_domain_id"))
        .values(
            scans=domains.c.scans + 1,
            last_scanned_at=if_newest(domains.c.last_scanned_at, "p_scanned_at"),
            last_job_id=if_newest(domains.c.last_job_id, "p_job_id"),
            status=if_newest(domains.c.status, "p_status"),
            error_kind=if_newest(domains.c.error_kind, "p_error_kind"),
            http_status=if_newest(domains.c.http_status, "p_http_status"),
            url=if_newest(domains.c.url, "p_url"),
            title=if_newest(domains.c.title, "p_title"),
            record=if_newest(domains.c.record, "p_record"),
        )
    )


def _bound(columns: Mapping[str, Any]) -> Callable[[str], Any]:
    """Values from an executemany's parameters."""
    return lambda name: bindparam(name, type_=columns[name])


def _unpacked(
    build: Callable[[Callable[[str], Any]], Update], columns: Mapping[str, Any], table: Table
) -> Update:
    """`build` over the rows of the JSON array bound as ``p_rows``, unpacked by PostgreSQL.

    The rows' ids are bound again as ``p_ids`` and the update limited to them: whatever plan the
    statistics suggest (a hash join over the tenant's whole table looks cheap while they are stale),
    the primary key is then what finds the rows, and a flush reads no more than its own.
    """
    rows = (
        func.jsonb_to_recordset(bindparam("p_rows", type_=postgresql.JSONB))
        .table_valued(*(column(name, kind) for name, kind in columns.items()))
        .render_derived("v", with_types=True)
    )
    ids = bindparam("p_ids", type_=postgresql.ARRAY(table.c.id.type))
    return build(lambda name: rows.c[name]).where(table.c.id == any_(ids))


@dataclass(frozen=True)
class _RowWrite:
    """One of `finish`'s two statements, and how its rows reach it."""

    statement: Update
    key: str  # the parameter that names each row's id
    unpacked: bool  # the rows as one JSON array (p_rows, with p_ids), else an executemany

    async def run(self, conn: AsyncConnection, rows: list[dict[str, Any]], *where: Any) -> int:
        """Write `rows` (limited by `where`); returns how many rows changed."""
        stmt = self.statement.where(*where)
        if self.unpacked:
            params = {"p_rows": rows, "p_ids": [row[self.key] for row in rows]}
            return int((await conn.execute(stmt, params)).rowcount)
        return int((await conn.execute(stmt, rows)).rowcount)


# Per dialect: (finish the jobs, count the scans on their domains).
STATEMENTS = {
    "sqlite": (
        _RowWrite(_finish_job(_bound(_FINISH_COLUMNS)), "p_job_id", unpacked=False),
        _RowWrite(_scan_domain(_bound(_SCAN_COLUMNS)), "p_domain_id", unpacked=False),
    ),
    "postgresql": (
        _RowWrite(_unpacked(_finish_job, _FINISH_COLUMNS, jobs), "p_job_id", unpacked=True),
        _RowWrite(_unpacked(_scan_domain, _SCAN_COLUMNS, domains), "p_domain_id", unpacked=True),
    ),
}
