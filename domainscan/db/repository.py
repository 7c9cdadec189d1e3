"""The repository: what the pipeline and the read commands may ask of storage, one transaction per call.

Session-per-operation (GUIDE §3): each public method opens a connection, runs one short transaction,
commits and hands back plain values (dataclasses from ``domainscan.models``, ints, dicts). Nothing is
held between calls, so no connection sits idle across a fetch, and behind a transaction pooler no server
connection is pinned. To keep that cheap, the write methods take whole lists and use bulk statements.

Faults that pass (a dropped connection, a pooler restart or PAUSE, SQLite's lock outlasting its busy
timeout, a deadlock; see :func:`domainscan.db.errors.is_transient`) are retried with exponential backoff
and jitter, each attempt in a new connection, for at most RETRY_BUDGET seconds; then StorageError, and the
caller spools. Nothing else is retried. A retried write must not count twice when the first attempt did
commit and only its acknowledgement was lost, so every write is idempotent: each call takes its
timestamp once, before the first attempt, and a retry recognizes the rows that carry it (the jobs it
created, leased or finished, the batch it started) as its own; finish_jobs changes only jobs that have
no outcome yet and derives every counter from the rows it actually changed.

Concurrency, because several domainscan processes may write one database:

* Get-or-create of a domain is one ``INSERT ... ON CONFLICT (tenant, domain) DO UPDATE ... RETURNING``
  (a no-op update, so existing rows come back too): two processes adding the same new domain both get
  the one row, with no SELECT-then-INSERT window and no IntegrityError to retry.
* Writers lock rows in one order: domains sorted by name, then those domains' sitemap rows (sitemap_files,
  sitemap_urls, each by domain and URL), then jobs, the batch row last. Two transactions that touch the
  same rows then queue behind each other instead of deadlocking. (add_jobs
  waits on a job row while it holds domains: its insert checks the batch's existing jobs for conflicts.
  A process admits later inputs while it finishes earlier ones, so this order matters even within one.)
  finish_jobs reads its jobs first without locking them and then updates each only if its status is
  still the one it read (compare-and-set); a job that changed in between makes it start over.
* A domain's latest facts are only replaced by a scan that is not older than the stored one (a guard on
  ``last_scanned_at``): two batches may scan a domain at the same time and finish in either order. Its
  sitemap rows follow its latest facts: written (upserted, and rows the scan no longer found deleted)
  only by the scan whose facts the domain row now holds.
* A running job carries a lease (owner, expiry); a running batch a heartbeat that every write of its
  process refreshes. ``reopen_batch`` (``--resume``) refuses a batch whose heartbeat is fresh, and takes
  back only jobs that were cancelled or whose lease has expired: nothing is scanned twice.

Every statement filters by tenant; ids from another tenant simply match nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    Row,
    Select,
    Table,
    Update,
    and_,
    any_,
    bindparam,
    case,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_before_delay,
    wait_exponential_jitter,
)

from domainscan.dates import parse_w3c_datetime
from domainscan.db.engine import create_engine, read_only
from domainscan.db.errors import TransientStorageError, wrap_db_errors
from domainscan.db.migrate import HEAD, check_schema, current_revision, upgrade
from domainscan.db.tables import BATCH_STATUSES, batches, domains, jobs, sitemap_files, sitemap_urls
from domainscan.db.types import UTCDateTime, parse_iso, to_iso, utcnow
from domainscan.errors import BatchInUse, ErrorKind, StorageError
from domainscan.models import (
    RECORD_FIELDS,
    SITEMAP_FIELDS,
    BatchInfo,
    DomainInfo,
    ImportCounts,
    InvalidInput,
    JobInfo,
    ScanResult,
    Target,
    UrlEntry,
)

PAGE_SIZE = 500  # rows per list_domains/list_jobs page, each page its own short transaction
STALE_AFTER = 15.0  # seconds without a heartbeat after which a running batch is reported stale
LEASE_SECONDS = 300.0  # mark_running's default lease on a job
RETRY_BUDGET = 30.0  # seconds one operation may spend retrying transient faults before StorageError
RETRY_INITIAL_WAIT = 0.1  # seconds before the first retry; doubles each time...
RETRY_MAX_WAIT = 5.0  # ...up to this
RETRY_JITTER = 0.5  # plus up to this much at random, so that many clients do not reconnect in step
IMPORT_CHUNK = 500  # spooled records stored per transaction
_IDS_PER_STATEMENT = 1000  # keeps IN (...) lists far below SQLite's and PostgreSQL's parameter limits
_NO_JOB = 0  # the job id of a spooled record whose input was never registered, until import gives it one
_TERMINAL = ("succeeded", "failed")  # a job with one of these has its outcome; cancelled is resumable
_OWNER_LENGTH = 128
# URLs longer than this (in UTF-8 bytes) are not stored in the sitemap tables: the sitemap protocol
# allows 2,048 characters, and PostgreSQL's unique index would refuse a key of more than ~2,700 bytes.
MAX_STORED_URL = 2048
_CHANGEFREQS = frozenset({"always", "hourly", "daily", "weekly", "monthly", "yearly", "never"})

_log = logging.getLogger("domainscan.db")
_T = TypeVar("_T")


def default_owner() -> str:
    """The lease owner of this process: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"[-_OWNER_LENGTH:]


async def open_repository(
    url: str, *, pool_size: int = 0, connect_timeout: float = 10, auto_upgrade: bool = False
) -> Repository:
    """Connect to ``url`` and check (or, with ``auto_upgrade``, bring up to date) its schema.

    ``auto_upgrade`` is for the embedded SQLite default, which nobody should have to migrate by hand;
    shared databases are upgraded explicitly with ``domainscan db upgrade``, otherwise SchemaError.
    Raises StorageError when the database cannot be reached within ``connect_timeout`` seconds (not
    retried: a database that is down at start is reported at once).
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

    # --- batches -------------------------------------------------------------------------------------

    async def start_batch(self, tenant: str, source: str, options: dict[str, Any]) -> int:
        """Record a new running batch (heartbeat now); ``source`` says where its inputs came from."""
        now = utcnow()

        async def op(retry: bool) -> int:
            async with self._write() as conn:
                if retry:  # the first attempt may have committed, and only its acknowledgement got lost
                    mine = select(batches.c.id).where(
                        batches.c.tenant == tenant, batches.c.created_at == now, batches.c.source == source
                    )
                    if (found := (await conn.execute(mine)).scalar()) is not None:
                        return int(found)
                stmt = (
                    insert(batches)
                    .values(
                        tenant=tenant,
                        status="running",
                        source=source,
                        options=options,
                        created_at=now,
                        heartbeat_at=now,
                    )
                    .returning(batches.c.id)
                )
                return int((await conn.execute(stmt)).scalar_one())

        return await self._retrying(op)

    async def heartbeat(
        self,
        tenant: str,
        batch_id: int,
        *,
        owner: str | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        """Say the batch's process is alive (heartbeat_at now).

        With ``lease_seconds``, also extend the leases of ``owner``'s (default: this process's) running
        jobs of the batch to now + ``lease_seconds``, so a scan that outlives its first lease is kept.
        """
        now = utcnow()
        if lease_seconds is not None:
            owner = owner or default_owner()

        async def op(retry: bool) -> None:
            async with self._write() as conn:
                if owner is not None and lease_seconds is not None:
                    await conn.execute(
                        update(jobs)
                        .where(
                            jobs.c.tenant == tenant,
                            jobs.c.batch_id == batch_id,
                            jobs.c.status == "running",
                            jobs.c.lease_owner == owner,
                        )
                        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                    )
                await _bump_batch(conn, tenant, batch_id, heartbeat_at=now)

        await self._retrying(op)

    async def finish_batch(self, tenant: str, batch_id: int, status: str) -> BatchInfo:
        """Close a batch with ``status``; its counters are recounted from its jobs, so they are exact."""
        if status not in BATCH_STATUSES:
            raise ValueError(f"batch status must be one of {', '.join(BATCH_STATUSES)}, not {status!r}")
        now = utcnow()

        async def op(retry: bool) -> BatchInfo:
            async with self._write() as conn:
                tally = await _recount(conn, tenant, batch_id)
                row = (
                    await conn.execute(
                        update(batches)
                        .where(batches.c.tenant == tenant, batches.c.id == batch_id)
                        .values(status=status, finished_at=now, **tally)
                        .returning(*batches.c)
                    )
                ).one_or_none()
            if row is None:
                raise StorageError(f"batch {batch_id} of tenant {tenant!r} not found")
            return _batch_info(row, now)

        return await self._retrying(op)

    async def reopen_batch(
        self, tenant: str, batch_id: int, *, stale_after: float = STALE_AFTER
    ) -> BatchInfo:
        """Make a batch ready to be resumed (``--resume``); returns it as it is then.

        Raises StorageError if the tenant has no such batch, BatchInUse if it is running with a heartbeat
        younger than ``stale_after`` seconds (its process is alive). A complete batch comes back unchanged.
        Otherwise, in one transaction: its cancelled jobs, and its running jobs whose lease has expired
        (or that have none), are queued again; a running job with a live lease is left to its owner; the
        counters are recounted; the batch is running again (finished_at cleared, heartbeat now).
        """
        now = utcnow()

        async def op(retry: bool) -> BatchInfo:
            async with self._write() as conn:
                stmt = select(batches).where(batches.c.tenant == tenant, batches.c.id == batch_id)
                row = (await conn.execute(stmt)).one_or_none()
                if row is None:
                    raise StorageError(f"batch {batch_id} not found for tenant {tenant!r}")
                if row.status == "complete" or (retry and row.heartbeat_at == now):
                    return _batch_info(row, now)  # (or reopened by an attempt whose ack was lost)
                if row.status == "running":
                    age = (now - (row.heartbeat_at or row.created_at)).total_seconds()
                    if age < stale_after:
                        raise BatchInUse(
                            f"batch {batch_id} is still running (heartbeat {max(age, 0):.0f}s ago); "
                            "wait for it or stop it first"
                        )
                await _requeue(conn, tenant, batch_id, now, cancelled=True)
                tally = await _recount(conn, tenant, batch_id)
                reopened = (
                    await conn.execute(
                        update(batches)
                        .where(
                            batches.c.tenant == tenant,
                            batches.c.id == batch_id,
                            # Compare-and-set: a resume that got here first has changed both.
                            batches.c.status == row.status,
                            batches.c.heartbeat_at.is_not_distinct_from(row.heartbeat_at),
                        )
                        .values(status="running", finished_at=None, heartbeat_at=now, **tally)
                        .returning(*batches.c)
                    )
                ).one_or_none()
                if reopened is None:
                    raise TransientStorageError(
                        f"batch {batch_id} changed while it was reopened; trying again"
                    )
                return _batch_info(reopened, now)

        return await self._retrying(op)

    async def requeue_expired(self, tenant: str, batch_id: int) -> int:
        """Queue again the batch's running jobs whose lease has expired; returns how many.

        For a resumed batch whose last jobs were still leased by the process that died: once their
        lease runs out, they can be handed out again (``next_jobs``).
        """
        now = utcnow()

        async def op(retry: bool) -> int:
            async with self._write() as conn:
                return await _requeue(conn, tenant, batch_id, now, cancelled=False)

        return await self._retrying(op)

    async def get_batch(self, tenant: str, batch_id: int) -> BatchInfo | None:
        stmt = select(batches).where(batches.c.tenant == tenant, batches.c.id == batch_id)

        async def op(retry: bool) -> BatchInfo | None:
            async with self._read() as conn:
                row = (await conn.execute(stmt)).one_or_none()
            return None if row is None else _batch_info(row, utcnow())

        return await self._retrying(op)

    async def list_batches(self, tenant: str, *, limit: int = 50) -> list[BatchInfo]:
        """The tenant's batches, newest first."""
        stmt = select(batches).where(batches.c.tenant == tenant).order_by(batches.c.id.desc()).limit(limit)

        async def op(retry: bool) -> list[BatchInfo]:
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
            now = utcnow()
            return [_batch_info(row, now) for row in rows]

        return await self._retrying(op)

    # --- jobs ----------------------------------------------------------------------------------------

    async def add_jobs(
        self, tenant: str, batch_id: int, items: Sequence[Target | InvalidInput]
    ) -> list[int | None]:
        """Add a job per item; returns, per item in order, the new job id or None for a duplicate.

        A duplicate is a domain that already has a job in this batch (earlier in ``items`` or from an
        earlier call): it is not to be scanned again. A target's job is queued. An invalid input's job
        is stored already finished: failed, error_kind ``invalid_domain``, error ``line N: reason`` (or
        the reason alone), no domain; nobody needs to finish it. One transaction also counts the new jobs,
        the invalid ones and the duplicates on the batch.
        """
        if not items:
            return []
        now = utcnow()
        firsts: dict[str, Target] = {}
        for item in items:
            if isinstance(item, Target):
                firsts.setdefault(item.domain, item)
        names = sorted(firsts)
        invalid = [item for item in items if isinstance(item, InvalidInput)]

        async def op(retry: bool) -> list[int | None]:
            async with self._write() as conn:
                if retry and (done := await _admitted(conn, tenant, batch_id, items, names, now)) is not None:
                    return done
                domain_ids = await self._upsert_domains(conn, tenant, names, now)
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
                    rows = [_invalid_job_row(tenant, batch_id, item, now) for item in invalid]
                    invalid_ids = list((await conn.execute(stmt_invalid, rows)).scalars())
                ids = _in_input_order(items, domain_ids, job_by_domain, invalid_ids)
                added = sum(job_id is not None for job_id in ids)
                await _bump_batch(
                    conn,
                    tenant,
                    batch_id,
                    heartbeat_at=now,
                    total=added,
                    invalid=len(invalid),
                    duplicates=len(ids) - added,
                )
            return ids

        return await self._retrying(op)

    async def mark_running(
        self,
        tenant: str,
        job_ids: Sequence[int],
        *,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> list[int]:
        """Lease queued jobs to ``owner`` (default: this host and pid) for ``lease_seconds``.

        They become running (started_at now, lease until now + ``lease_seconds``) and their batches'
        heartbeat is refreshed. Jobs in any other state, including those another process has leased, are
        left alone. Returns the ids that this call moved, sorted: scan those and only those.
        """
        ids = sorted(set(job_ids))
        if not ids:
            return []
        lessee = default_owner() if owner is None else owner
        if len(lessee) > _OWNER_LENGTH:
            raise ValueError(f"a lease owner has at most {_OWNER_LENGTH} characters")
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)

        async def op(retry: bool) -> list[int]:
            async with self._write() as conn:
                return await _mark_running(conn, tenant, ids, lessee, now, expires, retry=retry)

        return await self._retrying(op)

    async def finish_jobs(
        self,
        tenant: str,
        batch_id: int,
        results: Sequence[ScanResult],
        *,
        running: Sequence[int] = (),
        lease_seconds: float = LEASE_SECONDS,
    ) -> int:
        """Store the outcome of many jobs of one batch in one transaction; returns how many were stored.

        In the same transaction, after the outcomes (rows are locked domains first, then jobs), the
        `running` jobs are leased as :meth:`mark_running` would: a recorder's flush is then one
        connection and one commit, not two of each (a new connection each with NullPool).

        Each job that has no outcome yet (queued, running or cancelled) gets its terminal state
        (succeeded, failed, or cancelled when the scan was stopped), its full output record (the
        history), and loses its lease; each scanned domain its latest facts and one more scan, unless a
        newer scan is already stored or this one was cancelled; the batch its ok/failed/invalid counts
        (a cancelled scan counts as failed) and a heartbeat. A domain whose sitemaps were scanned gets
        its sitemap_files rows (and, when the result kept page URLs, its sitemap_urls rows) replaced by
        what this scan found, under the same guard as its latest facts. A job that already succeeded
        or failed is left as it is and counts nothing: calling this twice with the same results (a
        retry) stores them once, and so does calling it for an invalid input's job (add_jobs finished
        those).
        Raises StorageError, writing nothing, if a result names a job outside this tenant's batch.
        """
        if not results:
            if running:
                await self.mark_running(tenant, running, lease_seconds=lease_seconds)
            return 0
        if any(r.job_id is None for r in results):
            raise ValueError("finish_jobs needs results with a job_id (from add_jobs)")
        outcomes = [_Outcome.from_result(r) for r in results]
        ids = sorted(set(running))
        lessee = default_owner()
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)

        async def op(retry: bool) -> int:
            async with self._write() as conn:
                tally = await _finish(conn, tenant, batch_id, outcomes, now, retry=retry, strict=True)
                if ids:
                    await _mark_running(conn, tenant, ids, lessee, now, expires, retry=retry)
            return tally.finished

        return await self._retrying(op)

    async def next_jobs(self, tenant: str, batch_id: int, *, after_id: int, limit: int) -> list[JobInfo]:
        """The batch's queued jobs with an id above ``after_id``, by id, at most ``limit`` (keyset paging)."""
        stmt = (
            _job_select()
            .where(
                jobs.c.tenant == tenant,
                jobs.c.batch_id == batch_id,
                jobs.c.status == "queued",
                jobs.c.id > after_id,
            )
            .order_by(jobs.c.id)
            .limit(limit)
        )

        async def op(retry: bool) -> list[JobInfo]:
            async with self._read() as conn:
                return [_job_info(row) for row in await conn.execute(stmt)]

        return await self._retrying(op)

    async def list_jobs(
        self,
        tenant: str,
        *,
        batch_id: int | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[JobInfo]:
        """The tenant's jobs by id, optionally of one batch and/or in one status (``jobs list``).

        An async iterator over keyset pages of PAGE_SIZE rows, each read in its own short transaction.
        """
        after = 0
        remaining = limit
        while remaining is None or remaining > 0:
            page_size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            stmt = _job_select().where(jobs.c.tenant == tenant, jobs.c.id > after)
            if batch_id is not None:
                stmt = stmt.where(jobs.c.batch_id == batch_id)
            if status is not None:
                stmt = stmt.where(jobs.c.status == status)
            rows = await self._retrying(partial(self._page, stmt.order_by(jobs.c.id).limit(page_size)))
            for row in rows:
                yield _job_info(row)
            if len(rows) < page_size:
                return
            after = rows[-1].id
            if remaining is not None:
                remaining -= len(rows)

    async def job_counts(self, tenant: str, batch_id: int) -> dict[str, int]:
        """Job status -> number of the batch's jobs in it (statuses with no jobs are absent)."""
        stmt = (
            select(jobs.c.status, func.count())
            .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id)
            .group_by(jobs.c.status)
        )

        async def op(retry: bool) -> dict[str, int]:
            async with self._read() as conn:
                return {status: int(n) for status, n in await conn.execute(stmt)}

        return await self._retrying(op)

    async def import_records(self, tenant: str, records: Sequence[Mapping[str, Any]]) -> ImportCounts:
        """Store output records that a scan could not store (``domainscan import SPOOL``); idempotent.

        A record whose job (job_id in batch_id, this tenant, same domain) has no outcome yet finishes it
        as finish_jobs would (the domain's latest facts too, guarded by scanned_at; no heartbeat). A
        record whose job has one is counted as already stored. A record with a batch id but no job id
        is an input the scan could not register: it gets the batch's job for its domain (made now, or
        the one the batch has), then its outcome the same way; an invalid input gets a job for its
        input and error. A record whose batch or job is not in this database, or that is not an output
        record, is skipped. Raises StorageError, storing nothing, if a record belongs to another tenant.
        Each IMPORT_CHUNK records of a batch are one transaction: an import that stops half-way can
        simply be run again.
        """
        for number, record in enumerate(records, 1):
            owner = record.get("tenant") if isinstance(record, Mapping) else None
            if owner is not None and owner != tenant:
                raise StorageError(
                    f"record {number} belongs to tenant {owner!r}, not {tenant!r}; nothing was imported"
                )
        skipped = 0
        by_batch: dict[int, list[_Outcome]] = {}
        for record in records:
            try:
                outcome = _Outcome.from_record(record, adopt=True)
            except (KeyError, TypeError, ValueError):
                skipped += 1
                continue
            if outcome.batch_id is None or record.get("tenant") != tenant:
                skipped += 1
                continue
            by_batch.setdefault(outcome.batch_id, []).append(outcome)
        imported = already = 0
        for batch_id, outcomes in sorted(by_batch.items()):
            for start in range(0, len(outcomes), IMPORT_CHUNK):
                chunk = outcomes[start : start + IMPORT_CHUNK]
                tally = await self._retrying(partial(self._import_chunk, tenant, batch_id, chunk, utcnow()))
                imported += tally.finished
                already += tally.already
                skipped += tally.missing
        return ImportCounts(imported=imported, already_stored=already, skipped=skipped)

    # --- domains -------------------------------------------------------------------------------------

    async def get_domain(self, tenant: str, domain: str) -> DomainInfo | None:
        """A stored domain by its normalized name (see ``domainscan.domains``)."""
        stmt = select(domains).where(domains.c.tenant == tenant, domains.c.domain == domain)

        async def op(retry: bool) -> DomainInfo | None:
            async with self._read() as conn:
                row = (await conn.execute(stmt)).one_or_none()
            return None if row is None else _domain_info(row)

        return await self._retrying(op)

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
            rows = await self._retrying(partial(self._page, stmt.order_by(domains.c.domain).limit(page_size)))
            for row in rows:
                yield _domain_info(row)
            if len(rows) < page_size:
                return
            after = rows[-1].domain
            if remaining is not None:
                remaining -= len(rows)

    # --- plumbing ------------------------------------------------------------------------------------

    async def _retrying(self, op: Callable[[bool], Awaitable[_T]]) -> _T:
        """Run ``op`` (one short transaction), again while it fails transiently, for up to RETRY_BUDGET s.

        ``op`` is told whether it is a retry, so that a write can recognize its own rows from an attempt
        that committed but whose acknowledgement was lost. Each attempt opens its own connection; the
        waits happen with none open. When the budget is spent: StorageError saying so.
        """
        started = time.monotonic()
        attempts = 0
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientStorageError),
            stop=stop_before_delay(RETRY_BUDGET),
            wait=wait_exponential_jitter(
                multiplier=RETRY_INITIAL_WAIT, max=RETRY_MAX_WAIT, jitter=RETRY_JITTER
            ),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    return await op(attempts > 1)
        except TransientStorageError as exc:
            elapsed = time.monotonic() - started
            raise StorageError(f"{exc}; gave up after {attempts} attempts in {elapsed:.1f}s") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _page(self, stmt: Select[Any], retry: bool) -> list[Row[Any]]:
        async with self._read() as conn:
            return list((await conn.execute(stmt)).all())

    async def _import_chunk(
        self, tenant: str, batch_id: int, outcomes: list[_Outcome], now: datetime, retry: bool
    ) -> _Tally:
        async with self._write() as conn:
            if any(outcome.job_id == _NO_JOB for outcome in outcomes):
                if not await _has_batch(conn, tenant, batch_id):
                    return _Tally(missing=len(outcomes))
                outcomes = await self._adopt(conn, tenant, batch_id, outcomes, now)
            return await _finish(conn, tenant, batch_id, outcomes, now, retry=retry, strict=False)

    async def _adopt(
        self, conn: AsyncConnection, tenant: str, batch_id: int, outcomes: list[_Outcome], now: datetime
    ) -> list[_Outcome]:
        """Give the outcomes that have no job (their input was never registered) the batch's job for
        their domain, made now if the batch has none, or for an invalid input the job with its input and
        error; the batch counts the jobs made. Idempotent: a second import finds the jobs it made."""
        jobless = [outcome for outcome in outcomes if outcome.job_id == _NO_JOB]
        firsts: dict[str, _Outcome] = {}
        for outcome in jobless:
            if outcome.domain is not None:
                firsts.setdefault(outcome.domain, outcome)
        domain_ids = await self._upsert_domains(conn, tenant, sorted(firsts), now)
        made = 0
        job_of_domain: dict[str, int] = {}
        if firsts:
            stmt = (
                self._insert(jobs)
                .on_conflict_do_nothing(index_elements=[jobs.c.batch_id, jobs.c.domain_id])
                .returning(jobs.c.id)
            )
            rows = [
                _adopted_job_row(tenant, batch_id, o, domain_ids[name], now) for name, o in firsts.items()
            ]
            made += len((await conn.execute(stmt, rows)).all())
            for chunk in _chunked(sorted(domain_ids.values())):
                found = select(jobs.c.id, domains.c.domain).join(domains, domains.c.id == jobs.c.domain_id)
                found = found.where(
                    jobs.c.tenant == tenant, jobs.c.batch_id == batch_id, jobs.c.domain_id.in_(chunk)
                )
                job_of_domain.update((row.domain, row.id) for row in await conn.execute(found))
        job_of_invalid: dict[tuple[str, str | None], int] = {}
        for outcome in jobless:
            if (
                outcome.domain is not None
                or (key := (outcome.record["input"], outcome.error)) in job_of_invalid
            ):
                continue
            found_invalid = select(jobs.c.id).where(
                jobs.c.tenant == tenant,
                jobs.c.batch_id == batch_id,
                jobs.c.domain_id.is_(None),
                jobs.c.input == key[0],
                jobs.c.error == key[1],
            )
            job_id = (await conn.execute(found_invalid.limit(1))).scalar()
            if job_id is None:
                row = _adopted_job_row(tenant, batch_id, outcome, None, now)
                job_id = (await conn.execute(insert(jobs).returning(jobs.c.id), row)).scalar_one()
                made += 1
            job_of_invalid[key] = job_id
        await _bump_batch(conn, tenant, batch_id, total=made)
        adopted: list[_Outcome] = []
        for outcome in outcomes:
            if outcome.job_id != _NO_JOB:
                adopted.append(outcome)
                continue
            if outcome.domain is not None:
                job_id = job_of_domain[outcome.domain]
            else:
                job_id = job_of_invalid[(outcome.record["input"], outcome.error)]
            record = {**outcome.record, "job_id": job_id}
            adopted.append(dataclasses.replace(outcome, job_id=job_id, record=record))
        return adopted

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


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.upcoming_sleep
    _log.warning("%s; trying again in %.1fs (attempt %d)", error, wait, state.attempt_number + 1)


# --- storing outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
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
    def from_result(cls, result: ScanResult) -> _Outcome:
        outcome = cls.from_record(result.to_record())
        if result.sitemap is not None and result.sitemap.urls is not None:
            return dataclasses.replace(outcome, urls=result.sitemap.urls)
        return outcome

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, adopt: bool = False) -> _Outcome:
        """Raises KeyError, TypeError or ValueError for anything that is not an output record, or for
        a record without a job id unless `adopt` (its job_id is then _NO_JOB, until it gets one)."""
        kind = _optional(record, "error_kind", str)
        if kind is not None:
            kind = ErrorKind(kind).value
        status = "succeeded" if kind is None else "cancelled" if kind == ErrorKind.CANCELLED else "failed"
        job_id = _optional(record, "job_id", int)
        if job_id is None:
            if not adopt or not isinstance(record.get("input"), str):
                raise ValueError("a record without a job")
            job_id = _NO_JOB
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


def _adopted_job_row(
    tenant: str, batch_id: int, outcome: _Outcome, domain_id: int | None, now: datetime
) -> dict[str, Any]:
    """A job made on import for an input the scan could not register (queued: _finish gives it its
    outcome in the same transaction). Its line and source were not recorded."""
    return {
        "tenant": tenant,
        "batch_id": batch_id,
        "domain_id": domain_id,
        "input": outcome.record["input"],
        "status": "queued",
        "created_at": now,
    }


async def _has_batch(conn: AsyncConnection, tenant: str, batch_id: int) -> bool:
    stmt = select(batches.c.id).where(batches.c.tenant == tenant, batches.c.id == batch_id)
    return (await conn.execute(stmt)).first() is not None


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
class _Tally:
    finished: int = 0  # jobs this call gave their outcome
    already: int = 0  # jobs that had theirs (or a result named one twice)
    missing: int = 0  # results whose job is not in the batch (import_records skips those)


async def _finish(
    conn: AsyncConnection,
    tenant: str,
    batch_id: int,
    outcomes: Sequence[_Outcome],
    now: datetime,
    *,
    retry: bool,
    strict: bool,
) -> _Tally:
    """Give jobs of one batch their outcome; see finish_jobs. ``strict``: a missing job is an error.

    Reads the jobs first (without locking them: domains are locked before jobs), then updates each
    domain and job; a job is updated only if its status is still the one read, and the batch's counters
    move by what the changed jobs left and entered. A job that changed in between (another process
    finishing it, say) aborts the transaction as transient, and the retry reads again.
    """
    tally = _Tally()
    ids = sorted({outcome.job_id for outcome in outcomes})
    current: dict[int, Any] = {}
    for chunk in _chunked(ids):
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
    by_job: dict[int, _Outcome] = {}
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
    changes: list[tuple[_Outcome, Any]] = []
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
            await _bump_batch(conn, tenant, batch_id, heartbeat_at=now)
        return tally
    # A stopped scan says nothing about the site: it must not replace what the last real scan found.
    scanned = sorted(
        ((o, row) for o, row in changes if row.domain_id is not None and o.status != "cancelled"),
        key=lambda change: str(change[1].domain),
    )
    finish_job, scan_domain = _STATEMENTS[conn.dialect.name]
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
        moves[_counter_of(row.status, row.error_kind)] -= 1
        moves[_counter_of(outcome.status, outcome.error_kind)] += 1
    moves.pop(None, None)
    await _bump_batch(
        conn,
        tenant,
        batch_id,
        heartbeat_at=now if strict else None,
        **{str(name): n for name, n in moves.items() if n},
    )
    tally.finished += len(changes)
    return tally


async def _mark_running(
    conn: AsyncConnection,
    tenant: str,
    ids: Sequence[int],
    lessee: str,
    now: datetime,
    expires: datetime,
    *,
    retry: bool,
) -> list[int]:
    """Lease the queued ones of `ids` to `lessee`; see Repository.mark_running."""
    moved: dict[int, int] = {}
    for chunk in _chunked(ids):
        stmt = (
            update(jobs)
            .where(jobs.c.tenant == tenant, jobs.c.status == "queued", jobs.c.id.in_(chunk))
            .values(status="running", started_at=now, lease_owner=lessee, lease_expires_at=expires)
            .returning(jobs.c.id, jobs.c.batch_id)
        )
        moved.update((row.id, row.batch_id) for row in await conn.execute(stmt))
        if retry:  # the ones an attempt whose acknowledgement was lost already moved
            mine = select(jobs.c.id, jobs.c.batch_id).where(
                jobs.c.tenant == tenant,
                jobs.c.id.in_(chunk),
                jobs.c.status == "running",
                jobs.c.lease_owner == lessee,
                jobs.c.started_at == now,
            )
            moved.update((row.id, row.batch_id) for row in await conn.execute(mine))
    for batch_id in sorted(set(moved.values())):
        await _bump_batch(conn, tenant, batch_id, heartbeat_at=now)
    return sorted(moved)


async def _store_sitemaps(
    conn: AsyncConnection, tenant: str, scanned: Sequence[tuple[_Outcome, Any]]
) -> None:
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
    for chunk in _chunked(sorted({row.domain_id for _, row in candidates})):
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


def _counter_of(status: str, error_kind: str | None) -> str | None:
    """The batch counter a job in this state counts in (None: not finished)."""
    if status == "succeeded":
        return "ok"
    if error_kind == ErrorKind.INVALID_DOMAIN:
        return "invalid"
    if status in ("failed", "cancelled"):
        return "failed"
    return None


# The two statements of _finish, each written once over a source of per-row values (its `value(name)`):
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
    """One of _finish's two statements, and how its rows reach it."""

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
_STATEMENTS = {
    "sqlite": (
        _RowWrite(_finish_job(_bound(_FINISH_COLUMNS)), "p_job_id", unpacked=False),
        _RowWrite(_scan_domain(_bound(_SCAN_COLUMNS)), "p_domain_id", unpacked=False),
    ),
    "postgresql": (
        _RowWrite(_unpacked(_finish_job, _FINISH_COLUMNS, jobs), "p_job_id", unpacked=True),
        _RowWrite(_unpacked(_scan_domain, _SCAN_COLUMNS, domains), "p_domain_id", unpacked=True),
    ),
}


# --- jobs and batches ----------------------------------------------------------------------------------


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


def _invalid_job_row(tenant: str, batch_id: int, item: InvalidInput, now: datetime) -> dict[str, Any]:
    """An invalid input's job, finished as it is made (the same error as its output record)."""
    where = f"line {item.line}: " if item.line is not None else ""
    return _job_row(tenant, batch_id, item, None, now) | {
        "status": "failed",
        "error_kind": ErrorKind.INVALID_DOMAIN.value,
        "error": f"{where}{item.reason}",
        "finished_at": now,
    }


async def _admitted(
    conn: AsyncConnection,
    tenant: str,
    batch_id: int,
    items: Sequence[Target | InvalidInput],
    names: list[str],
    now: datetime,
) -> list[int | None] | None:
    """add_jobs' answer if an earlier attempt of this call committed (its jobs carry ``now``), else None."""
    stmt = (
        select(jobs.c.id, jobs.c.domain_id)
        .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id, jobs.c.created_at == now)
        .order_by(jobs.c.id)
    )
    rows = (await conn.execute(stmt)).all()
    if not rows:  # every item a duplicate: then only the batch's heartbeat tells
        beat = select(batches.c.heartbeat_at).where(batches.c.tenant == tenant, batches.c.id == batch_id)
        if (await conn.execute(beat)).scalar() != now:
            return None
    domain_ids: dict[str, int] = {}
    for chunk in _chunked(names):
        known = select(domains.c.domain, domains.c.id).where(
            domains.c.tenant == tenant, domains.c.domain.in_(chunk)
        )
        domain_ids.update((row.domain, row.id) for row in await conn.execute(known))
    job_by_domain = {row.domain_id: row.id for row in rows if row.domain_id is not None}
    invalid_ids = [row.id for row in rows if row.domain_id is None]
    return _in_input_order(items, domain_ids, job_by_domain, invalid_ids)


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
            ids.append(next(invalid, None))
        elif item.domain in seen or item.domain not in domain_ids:
            ids.append(None)
        else:
            seen.add(item.domain)
            ids.append(job_by_domain.get(domain_ids[item.domain]))
    return ids


async def _requeue(
    conn: AsyncConnection, tenant: str, batch_id: int, now: datetime, *, cancelled: bool
) -> int:
    """Queue again the batch's running jobs without a live lease (and, with ``cancelled``, its cancelled
    jobs), forgetting their start, lease and cancelled outcome; returns how many."""
    takeable = and_(
        jobs.c.status == "running",
        or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < now),
    )
    if cancelled:
        takeable = or_(jobs.c.status == "cancelled", takeable)
    stmt = (
        update(jobs)
        .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id, takeable)
        .values(
            status="queued",
            started_at=None,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=None,
            elapsed_ms=None,
            error_kind=None,
            error=None,
            result=None,
        )
    )
    return int((await conn.execute(stmt)).rowcount)


async def _recount(conn: AsyncConnection, tenant: str, batch_id: int) -> dict[str, int]:
    """The batch's total/ok/failed/invalid from its jobs (cancelled ones count as failed)."""
    counts = await conn.execute(
        select(jobs.c.status, jobs.c.error_kind, func.count())
        .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id)
        .group_by(jobs.c.status, jobs.c.error_kind)
    )
    tally = {"total": 0, "ok": 0, "failed": 0, "invalid": 0}
    for job_status, error_kind, n in counts:
        tally["total"] += n
        if (counter := _counter_of(job_status, error_kind)) is not None:
            tally[counter] += n
    return tally


async def _bump_batch(
    conn: AsyncConnection,
    tenant: str,
    batch_id: int,
    *,
    heartbeat_at: datetime | None = None,
    **increments: int,
) -> None:
    """Add to the batch's counters and set its heartbeat; the batch row is locked last (see the module
    docstring). Raises StorageError if the tenant has no such batch."""
    values: dict[Any, Any] = {batches.c[name]: batches.c[name] + n for name, n in increments.items() if n}
    if heartbeat_at is not None:
        values[batches.c.heartbeat_at] = heartbeat_at
    if not values:
        return
    stmt = update(batches).where(batches.c.tenant == tenant, batches.c.id == batch_id).values(values)
    if (await conn.execute(stmt)).rowcount != 1:
        raise StorageError(f"batch {batch_id} of tenant {tenant!r} not found")


def _chunked(values: Sequence[_T]) -> list[Sequence[_T]]:
    return [values[start : start + _IDS_PER_STATEMENT] for start in range(0, len(values), _IDS_PER_STATEMENT)]


# --- rows to dataclasses -------------------------------------------------------------------------------


def _job_select() -> Select[Any]:
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


def _job_info(row: Row[Any]) -> JobInfo:
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


def _batch_info(row: Row[Any], now: datetime) -> BatchInfo:
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
        stale=row.status == "running" and (now - last_sign).total_seconds() > STALE_AFTER,
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
    ordered = {name: record[name] for name in (*RECORD_FIELDS, *SITEMAP_FIELDS) if name in record}
    return ordered | record
