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
* A domain's latest facts, and its sitemap rows, are those of its newest scan, whichever scan finishes
  last (see :mod:`domainscan.db.outcomes`).
* A running job carries a lease (owner, expiry); a running batch a heartbeat that every write of its
  process refreshes. ``reopen_batch`` (``--resume``) refuses a batch whose heartbeat is fresh, and takes
  back only jobs that were cancelled or whose lease has expired: nothing is scanned twice.

Every statement filters by tenant; ids from another tenant simply match nothing.

The statements the methods run live beside this module, each set in its own: storing outcomes
(:mod:`domainscan.db.outcomes`), jobs and batches (:mod:`domainscan.db.jobs`), rows to dataclasses
(:mod:`domainscan.db.rows`). They take the caller's connection and never import this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Row, Select, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_before_delay,
    wait_exponential_jitter,
)

from domainscan.db.engine import create_engine, read_only
from domainscan.db.errors import TransientStorageError, wrap_db_errors
from domainscan.db.jobs import (
    admitted,
    bump_batch,
    chunked,
    has_batch,
    in_input_order,
    invalid_job_row,
    job_row,
    lease_queued,
    recount,
    requeue,
)
from domainscan.db.migrate import HEAD, check_schema, current_revision, upgrade
from domainscan.db.outcomes import (
    NO_JOB,
    Outcome,
    Tally,
    adopted_job_row,
    finish,
)
from domainscan.db.rows import batch_info, domain_info, job_info, job_select
from domainscan.db.tables import BATCH_STATUSES, batches, domains, jobs
from domainscan.db.types import utcnow
from domainscan.errors import BatchInUse, StorageError
from domainscan.models import BatchInfo, DomainInfo, ImportCounts, InvalidInput, JobInfo, ScanResult, Target

PAGE_SIZE = 500  # rows per list_domains/list_jobs page, each page its own short transaction
STALE_AFTER = 15.0  # seconds without a heartbeat after which a running batch is reported stale
LEASE_SECONDS = 300.0  # mark_running's default lease on a job
RETRY_BUDGET = 30.0  # seconds one operation may spend retrying transient faults before StorageError
RETRY_INITIAL_WAIT = 0.1  # seconds before the first retry; doubles each time...
RETRY_MAX_WAIT = 5.0  # ...up to this
RETRY_JITTER = 0.5  # plus up to this much at random, so that many clients do not reconnect in step
IMPORT_CHUNK = 500  # spooled records stored per transaction
_OWNER_LENGTH = 128

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
                await bump_batch(conn, tenant, batch_id, heartbeat_at=now)

        await self._retrying(op)

    async def finish_batch(
        self, tenant: str, batch_id: int, status: str, *, patient: bool = True
    ) -> BatchInfo:
        """Close a batch with ``status``; its counters are recounted from its jobs, so they are exact.
        Not `patient`: one attempt, no retries (a last try after the database already failed)."""
        if status not in BATCH_STATUSES:
            raise ValueError(f"batch status must be one of {', '.join(BATCH_STATUSES)}, not {status!r}")
        now = utcnow()

        async def op(retry: bool) -> BatchInfo:
            async with self._write() as conn:
                tally = await recount(conn, tenant, batch_id)
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
            return batch_info(row, now, STALE_AFTER)

        return await self._retrying(op, budget=None if patient else 0.0)

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
                    return batch_info(row, now, STALE_AFTER)  # (or reopened by an attempt whose ack was lost)
                if row.status == "running":
                    age = (now - (row.heartbeat_at or row.created_at)).total_seconds()
                    if age < stale_after:
                        raise BatchInUse(
                            f"batch {batch_id} is still running (heartbeat {max(age, 0):.0f}s ago); "
                            "wait for it or stop it first"
                        )
                await requeue(conn, tenant, batch_id, now, cancelled=True)
                tally = await recount(conn, tenant, batch_id)
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
                return batch_info(reopened, now, STALE_AFTER)

        return await self._retrying(op)

    async def requeue_expired(self, tenant: str, batch_id: int) -> int:
        """Queue again the batch's running jobs whose lease has expired; returns how many.

        For a resumed batch whose last jobs were still leased by the process that died: once their
        lease runs out, they can be handed out again (``next_jobs``).
        """
        now = utcnow()

        async def op(retry: bool) -> int:
            async with self._write() as conn:
                return await requeue(conn, tenant, batch_id, now, cancelled=False)

        return await self._retrying(op)

    async def get_batch(self, tenant: str, batch_id: int) -> BatchInfo | None:
        stmt = select(batches).where(batches.c.tenant == tenant, batches.c.id == batch_id)

        async def op(retry: bool) -> BatchInfo | None:
            async with self._read() as conn:
                row = (await conn.execute(stmt)).one_or_none()
            return None if row is None else batch_info(row, utcnow(), STALE_AFTER)

        return await self._retrying(op)

    async def list_batches(self, tenant: str, *, limit: int = 50) -> list[BatchInfo]:
        """The tenant's batches, newest first."""
        stmt = select(batches).where(batches.c.tenant == tenant).order_by(batches.c.id.desc()).limit(limit)

        async def op(retry: bool) -> list[BatchInfo]:
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
            now = utcnow()
            return [batch_info(row, now, STALE_AFTER) for row in rows]

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
                if retry and (done := await admitted(conn, tenant, batch_id, items, names, now)) is not None:
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
                        job_row(tenant, batch_id, target, domain_ids[target.domain], now)
                        for target in firsts.values()
                    ]
                    job_by_domain = {row.domain_id: row.id for row in await conn.execute(stmt, rows)}
                invalid_ids: list[int] = []
                if invalid:
                    stmt_invalid = insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True)
                    rows = [invalid_job_row(tenant, batch_id, item, now) for item in invalid]
                    invalid_ids = list((await conn.execute(stmt_invalid, rows)).scalars())
                ids = in_input_order(items, domain_ids, job_by_domain, invalid_ids)
                added = sum(job_id is not None for job_id in ids)
                await bump_batch(
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
                return await lease_queued(conn, tenant, ids, lessee, now, expires, retry=retry)

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
        outcomes = [Outcome.from_result(r) for r in results]
        ids = sorted(set(running))
        lessee = default_owner()
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)

        async def op(retry: bool) -> int:
            async with self._write() as conn:
                tally = await finish(conn, tenant, batch_id, outcomes, now, retry=retry, strict=True)
                if ids:
                    await lease_queued(conn, tenant, ids, lessee, now, expires, retry=retry)
            return tally.finished

        return await self._retrying(op)

    async def next_jobs(self, tenant: str, batch_id: int, *, after_id: int, limit: int) -> list[JobInfo]:
        """The batch's queued jobs with an id above ``after_id``, by id, at most ``limit`` (keyset paging)."""
        stmt = (
            job_select()
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
                return [job_info(row) for row in await conn.execute(stmt)]

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
            stmt = job_select().where(jobs.c.tenant == tenant, jobs.c.id > after)
            if batch_id is not None:
                stmt = stmt.where(jobs.c.batch_id == batch_id)
            if status is not None:
                stmt = stmt.where(jobs.c.status == status)
            rows = await self._retrying(partial(self._page, stmt.order_by(jobs.c.id).limit(page_size)))
            for row in rows:
                yield job_info(row)
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
        by_batch: dict[int, list[Outcome]] = {}
        for record in records:
            try:
                outcome = Outcome.from_record(record, adopt=True)
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
            return None if row is None else domain_info(row)

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
                yield domain_info(row)
            if len(rows) < page_size:
                return
            after = rows[-1].domain
            if remaining is not None:
                remaining -= len(rows)

    # --- plumbing ------------------------------------------------------------------------------------

    async def _retrying(self, op: Callable[[bool], Awaitable[_T]], *, budget: float | None = None) -> _T:
        """Run ``op`` (one short transaction), again while it fails transiently, for up to RETRY_BUDGET s
        (or `budget`: 0 for a single attempt).

        ``op`` is told whether it is a retry, so that a write can recognize its own rows from an attempt
        that committed but whose acknowledgement was lost. Each attempt opens its own connection; the
        waits happen with none open. When the budget is spent: StorageError saying so.
        """
        started = time.monotonic()
        attempts = 0
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientStorageError),
            stop=stop_before_delay(RETRY_BUDGET if budget is None else budget),
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
        self, tenant: str, batch_id: int, outcomes: list[Outcome], now: datetime, retry: bool
    ) -> Tally:
        async with self._write() as conn:
            if any(outcome.job_id == NO_JOB for outcome in outcomes):
                if not await has_batch(conn, tenant, batch_id):
                    return Tally(missing=len(outcomes))
                outcomes = await self._adopt(conn, tenant, batch_id, outcomes, now)
            return await finish(conn, tenant, batch_id, outcomes, now, retry=retry, strict=False)

    async def _adopt(
        self, conn: AsyncConnection, tenant: str, batch_id: int, outcomes: list[Outcome], now: datetime
    ) -> list[Outcome]:
        """Give the outcomes that have no job (their input was never registered) the batch's job for
        their domain, made now if the batch has none, or for an invalid input the job with its input and
        error; the batch counts the jobs made. Idempotent: a second import finds the jobs it made."""
        jobless = [outcome for outcome in outcomes if outcome.job_id == NO_JOB]
        firsts: dict[str, Outcome] = {}
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
            rows = [adopted_job_row(tenant, batch_id, o, domain_ids[name], now) for name, o in firsts.items()]
            made += len((await conn.execute(stmt, rows)).all())
            for chunk in chunked(sorted(domain_ids.values())):
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
                row = adopted_job_row(tenant, batch_id, outcome, None, now)
                job_id = (await conn.execute(insert(jobs).returning(jobs.c.id), row)).scalar_one()
                made += 1
            job_of_invalid[key] = job_id
        await bump_batch(conn, tenant, batch_id, total=made)
        adopted: list[Outcome] = []
        for outcome in outcomes:
            if outcome.job_id != NO_JOB:
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
