"""The repository: what the pipeline and the read commands may ask of storage, one transaction per call.

Session-per-operation (GUIDE §3): each public method opens a connection, runs one short transaction,
commits and hands back plain values (dataclasses from ``domainscan.models``, ints, dicts). Nothing is
held between calls, so no connection sits idle across a fetch, and behind a transaction pooler no server
connection is pinned. To keep that cheap, the write methods take whole lists and use bulk statements.

Concurrency, because several domainscan processes may write one database:

* Get-or-create of a domain is one ``INSERT ... ON CONFLICT (tenant, domain) DO UPDATE ... RETURNING``
  (a no-op update, so existing rows come back too): two processes adding the same new domain both get
  the one row, with no SELECT-then-INSERT window and no IntegrityError to retry.
* Writers lock rows in one order: domains sorted by name, then jobs, the batch row last. Two
  transactions that touch the same rows then queue behind each other instead of deadlocking. (add_jobs
  waits on a job row while it holds domains: its insert checks the batch's existing jobs for conflicts.
  A process admits later inputs while it finishes earlier ones, so this order matters even within one.)
* A domain's latest facts are only replaced by a scan that is not older than the stored one (a guard on
  ``last_scanned_at``): two batches may scan a domain at the same time and finish in either order.

Every statement filters by tenant; ids from another tenant simply match nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domainscan.db.engine import create_engine, read_only
from domainscan.db.errors import wrap_db_errors
from domainscan.db.migrate import HEAD, check_schema, current_revision, upgrade
from domainscan.db.tables import BATCH_STATUSES, batches, domains, jobs
from domainscan.db.types import UTCDateTime, parse_iso, to_iso, utcnow
from domainscan.errors import ErrorKind, StorageError
from domainscan.models import RECORD_FIELDS, BatchInfo, DomainInfo, InvalidInput, ScanResult, Target

PAGE_SIZE = 500  # rows per list_domains page, each page its own short transaction
_IDS_PER_STATEMENT = 1000  # keeps IN (...) lists far below SQLite's and PostgreSQL's parameter limits


async def open_repository(
    url: str, *, pool_size: int = 0, connect_timeout: float = 10, auto_upgrade: bool = False
) -> Repository:
    """Connect to ``url`` and check (or, with ``auto_upgrade``, bring up to date) its schema.

    ``auto_upgrade`` is for the embedded SQLite default, which nobody should have to migrate by hand;
    shared databases are upgraded explicitly with ``domainscan db upgrade``, otherwise SchemaError.
    Raises StorageError when the database cannot be reached within ``connect_timeout`` seconds.
    """
    engine = create_engine(url, pool_size=pool_size, connect_timeout=connect_timeout)
    try:
        if not auto_upgrade:
            await check_schema(engine)
        elif await current_revision(engine) != HEAD:
            await upgrade(engine)
    except BaseException:
        await engine.dispose()
        raise
    return Repository(engine)


class Repository:
    """Storage of batches, jobs and domains, per tenant. Build it with :func:`open_repository`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = read_only(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    async def start_batch(self, tenant: str, source: str, options: dict[str, Any]) -> int:
        """Record a new running batch; ``source`` says where its inputs came from."""
        stmt = (
            insert(batches)
            .values(tenant=tenant, status="running", source=source, options=options, created_at=utcnow())
            .returning(batches.c.id)
        )
        async with self._write() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def add_jobs(
        self, tenant: str, batch_id: int, items: Sequence[Target | InvalidInput]
    ) -> list[int | None]:
        """Queue a job per item; returns, per item in order, the new job id or None for a duplicate.

        A duplicate is a domain that already has a job in this batch (earlier in ``items`` or from an
        earlier call): it is not to be scanned again. Invalid inputs get a job without a domain.
        One transaction also counts the new jobs and the duplicates on the batch.
        """
        if not items:
            return []
        now = utcnow()
        firsts: dict[str, Target] = {}
        for item in items:
            if isinstance(item, Target):
                firsts.setdefault(item.domain, item)
        invalid = [item for item in items if isinstance(item, InvalidInput)]
        async with self._write() as conn:
            domain_ids = await self._upsert_domains(conn, tenant, sorted(firsts), now)
            job_by_domain: dict[int, int] = {}
            if firsts:
                stmt = (
                    self._insert(jobs)
                    .on_conflict_do_nothing(index_elements=[jobs.c.batch_id, jobs.c.domain_id])
                    .returning(jobs.c.id, jobs.c.domain_id)
                )
                rows = [
                    _job_row(tenant, batch_id, target, domain_ids[target.domain], now)
                    for target in firsts.values()
                ]
                job_by_domain = {row.domain_id: row.id for row in await conn.execute(stmt, rows)}
            invalid_ids: list[int] = []
            if invalid:
                stmt_invalid = insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True)
                rows = [_job_row(tenant, batch_id, item, None, now) for item in invalid]
                invalid_ids = list((await conn.execute(stmt_invalid, rows)).scalars())
            ids = _in_input_order(items, domain_ids, job_by_domain, invalid_ids)
            added = sum(job_id is not None for job_id in ids)
            await _bump_batch(conn, tenant, batch_id, total=added, duplicates=len(ids) - added)
        return ids

    async def mark_running(self, tenant: str, job_ids: Sequence[int]) -> None:
        """Move queued jobs to running (started_at now); jobs in any other state are left alone."""
        ids = sorted(set(job_ids))
        if not ids:
            return
        now = utcnow()
        async with self._write() as conn:
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                await conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.tenant == tenant,
                        jobs.c.status == "queued",
                        jobs.c.id.in_(ids[start : start + _IDS_PER_STATEMENT]),
                    )
                    .values(status="running", started_at=now)
                )

    async def finish_jobs(self, tenant: str, batch_id: int, results: Sequence[ScanResult]) -> None:
        """Store the outcome of many jobs of one batch in one transaction.

        Each job gets its terminal state (succeeded, failed, or cancelled when the scan was stopped) and
        its full output record (the history); each scanned domain its latest facts, unless a newer scan
        is already stored or this one was cancelled; the batch its ok/failed/invalid counts (a cancelled
        scan counts as failed).
        Raises StorageError, writing nothing, if a result names a job outside this tenant's batch.
        """
        if not results:
            return
        if any(r.job_id is None for r in results):
            raise ValueError("finish_jobs needs results with a job_id (from add_jobs)")
        now = utcnow()
        # A stopped scan says nothing about the site: it must not replace what the last real scan found.
        scanned = sorted(
            (r for r in results if r.domain is not None and r.error_kind != ErrorKind.CANCELLED),
            key=lambda r: str(r.domain),
        )
        invalid = sum(r.error_kind == ErrorKind.INVALID_DOMAIN for r in results)
        ok = sum(r.ok for r in results)
        async with self._write() as conn:
            # Domains before jobs (see the module docstring): add_jobs holds domain rows while it checks
            # for the batch's existing job rows, so taking a job row first and a domain second deadlocks.
            if scanned:
                params = [_domain_params(r) for r in scanned]
                await conn.execute(_COUNT_SCAN.where(domains.c.tenant == tenant), params)
                await conn.execute(_LATEST_FACTS.where(domains.c.tenant == tenant), params)
            finished = await conn.execute(
                _FINISH_JOB.where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id),
                [_finish_params(r, now) for r in sorted(results, key=lambda r: r.job_id or 0)],
            )
            if finished.rowcount != len(results):  # raising rolls the domain updates back too
                raise StorageError(
                    f"{len(results) - finished.rowcount} of {len(results)} results name jobs that are "
                    f"not in batch {batch_id} of tenant {tenant!r}; nothing was stored"
                )
            await _bump_batch(
                conn, tenant, batch_id, ok=ok, invalid=invalid, failed=len(results) - ok - invalid
            )

    async def finish_batch(self, tenant: str, batch_id: int, status: str) -> BatchInfo:
        """Close a batch with ``status``; its counters are recounted from its jobs, so they are exact."""
        if status not in BATCH_STATUSES:
            raise ValueError(f"batch status must be one of {', '.join(BATCH_STATUSES)}, not {status!r}")
        async with self._write() as conn:
            counts = await conn.execute(
                select(jobs.c.status, jobs.c.error_kind, func.count())
                .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id)
                .group_by(jobs.c.status, jobs.c.error_kind)
            )
            tally = {"total": 0, "ok": 0, "failed": 0, "invalid": 0}
            for job_status, error_kind, n in counts:
                tally["total"] += n
                if job_status == "succeeded":
                    tally["ok"] += n
                elif error_kind == ErrorKind.INVALID_DOMAIN:
                    tally["invalid"] += n
                elif job_status in ("failed", "cancelled"):
                    tally["failed"] += n
            row = (
                await conn.execute(
                    update(batches)
                    .where(batches.c.tenant == tenant, batches.c.id == batch_id)
                    .values(status=status, finished_at=utcnow(), **tally)
                    .returning(*batches.c)
                )
            ).one_or_none()
            if row is None:
                raise StorageError(f"batch {batch_id} of tenant {tenant!r} not found")
            return _batch_info(row)

    async def get_batch(self, tenant: str, batch_id: int) -> BatchInfo | None:
        stmt = select(batches).where(batches.c.tenant == tenant, batches.c.id == batch_id)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _batch_info(row)

    async def list_batches(self, tenant: str, *, limit: int = 50) -> list[BatchInfo]:
        """The tenant's batches, newest first."""
        stmt = select(batches).where(batches.c.tenant == tenant).order_by(batches.c.id.desc()).limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_batch_info(row) for row in rows]

    async def get_domain(self, tenant: str, domain: str) -> DomainInfo | None:
        """A stored domain by its normalized name (see ``domainscan.domains``)."""
        stmt = select(domains).where(domains.c.tenant == tenant, domains.c.domain == domain)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _domain_info(row)

    async def list_domains(
        self, tenant: str, *, limit: int | None = None, status: str | None = None
    ) -> AsyncIterator[DomainInfo]:
        """The tenant's domains sorted by name, optionally only those whose latest status is ``status``.

        An async iterator (``async for``) over keyset pages of PAGE_SIZE rows, each read in its own
        short transaction, so a huge tenant neither fills memory nor keeps a transaction open while the
        caller writes its output. (A server-side cursor would do both.)
        """
        after: str | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            page_size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            stmt = select(domains).where(domains.c.tenant == tenant)
            if status is not None:
                stmt = stmt.where(domains.c.status == status)
            if after is not None:
                stmt = stmt.where(domains.c.domain > after)
            async with self._read() as conn:
                rows = (await conn.execute(stmt.order_by(domains.c.domain).limit(page_size))).all()
            for row in rows:
                yield _domain_info(row)
            if len(rows) < page_size:
                return
            after = rows[-1].domain
            if remaining is not None:
                remaining -= len(rows)

    async def job_counts(self, tenant: str, batch_id: int) -> dict[str, int]:
        """Job status -> number of the batch's jobs in it (statuses with no jobs are absent)."""
        stmt = (
            select(jobs.c.status, func.count())
            .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id)
            .group_by(jobs.c.status)
        )
        async with self._read() as conn:
            return dict((await conn.execute(stmt)).all())

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        with wrap_db_errors(self._engine.url):
            async with self._engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        with wrap_db_errors(self._engine.url):
            async with self._reader.connect() as conn:
                yield conn

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """INSERT with the dialect's ON CONFLICT clauses (the same SQL on both)."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _upsert_domains(
        self, conn: AsyncConnection, tenant: str, names: list[str], now: datetime
    ) -> dict[str, int]:
        """Get-or-create the domain rows in one statement; ``names`` sorted, so locks come in order."""
        if not names:
            return {}
        stmt = (
            self._insert(domains)
            .on_conflict_do_update(
                index_elements=[domains.c.tenant, domains.c.domain],
                set_={"first_seen_at": domains.c.first_seen_at},  # no-op, but it makes RETURNING see the row
            )
            .returning(domains.c.id, domains.c.domain)
        )
        rows = [{"tenant": tenant, "domain": name, "first_seen_at": now} for name in names]
        return {row.domain: row.id for row in await conn.execute(stmt, rows)}


# The executemany statements of finish_jobs; parameters are prefixed "p_" because SQLAlchemy reserves the
# column names for the SET clause.
_scanned_at = bindparam("p_scanned_at", type_=UTCDateTime())
_FINISH_JOB = (
    update(jobs)
    .where(jobs.c.id == bindparam("p_job_id"))
    .values(
        status=bindparam("p_status"),
        finished_at=bindparam("p_finished_at"),
        elapsed_ms=bindparam("p_elapsed_ms"),
        error_kind=bindparam("p_error_kind"),
        error=bindparam("p_error"),
        result=bindparam("p_record"),
    )
)
_COUNT_SCAN = (
    update(domains).where(domains.c.domain == bindparam("p_domain")).values(scans=domains.c.scans + 1)
)
_LATEST_FACTS = (
    update(domains)
    .where(
        domains.c.domain == bindparam("p_domain"),
        or_(domains.c.last_scanned_at.is_(None), domains.c.last_scanned_at <= _scanned_at),
    )
    .values(
        last_scanned_at=_scanned_at,
        last_job_id=bindparam("p_job_id"),
        status=bindparam("p_status"),
        error_kind=bindparam("p_error_kind"),
        http_status=bindparam("p_http_status"),
        url=bindparam("p_url"),
        title=bindparam("p_title"),
        record=bindparam("p_record"),
    )
)


def _job_row(
    tenant: str, batch_id: int, item: Target | InvalidInput, domain_id: int | None, now: datetime
) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "batch_id": batch_id,
        "domain_id": domain_id,
        "input": item.input,
        "line": item.line,
        "source": item.source,
        "status": "queued",
        "created_at": now,
    }


def _in_input_order(
    items: Sequence[Target | InvalidInput],
    domain_ids: dict[str, int],
    job_by_domain: dict[int, int],
    invalid_ids: list[int],
) -> list[int | None]:
    """Per item: its new job id; None for a domain's later occurrences and for domains already queued."""
    invalid = iter(invalid_ids)
    seen: set[str] = set()
    ids: list[int | None] = []
    for item in items:
        if isinstance(item, InvalidInput):
            ids.append(next(invalid))
        elif item.domain in seen:
            ids.append(None)
        else:
            seen.add(item.domain)
            ids.append(job_by_domain.get(domain_ids[item.domain]))
    return ids


def _finish_params(result: ScanResult, now: datetime) -> dict[str, Any]:
    return {
        "p_job_id": result.job_id,
        "p_status": _job_status(result),
        "p_finished_at": now,
        "p_elapsed_ms": result.elapsed_ms,
        "p_error_kind": None if result.error_kind is None else str(result.error_kind),
        "p_error": result.error,
        "p_record": result.to_record(),
    }


def _job_status(result: ScanResult) -> str:
    if result.ok:
        return "succeeded"
    return "cancelled" if result.error_kind == ErrorKind.CANCELLED else "failed"


def _domain_params(result: ScanResult) -> dict[str, Any]:
    return {
        "p_domain": result.domain,
        "p_scanned_at": parse_iso(result.scanned_at),
        "p_job_id": result.job_id,
        "p_status": result.status,
        "p_error_kind": None if result.error_kind is None else str(result.error_kind),
        "p_http_status": result.http_status,
        "p_url": result.url,
        "p_title": result.facts.title,
        "p_record": result.to_record(),
    }


async def _bump_batch(conn: AsyncConnection, tenant: str, batch_id: int, **increments: int) -> None:
    """Add to the batch's counters; the batch row is locked last (see the module docstring)."""
    stmt = (
        update(batches)
        .where(batches.c.tenant == tenant, batches.c.id == batch_id)
        .values({batches.c[name]: batches.c[name] + n for name, n in increments.items()})
    )
    if (await conn.execute(stmt)).rowcount != 1:
        raise StorageError(f"batch {batch_id} of tenant {tenant!r} not found")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else to_iso(value)


def _batch_info(row: Row[Any]) -> BatchInfo:
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
    )


def _domain_info(row: Row[Any]) -> DomainInfo:
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
    ordered = {name: record[name] for name in RECORD_FIELDS if name in record}
    return ordered | record
