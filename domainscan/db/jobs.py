"""Jobs and batches: the statements that register, lease and requeue jobs and keep batch counters.

The async functions run in a transaction that their caller (:class:`domainscan.db.repository.Repository`
or :func:`domainscan.db.outcomes.finish`) has opened, and never commit; the others build the rows, ids
and counts they need. Rows are locked in the order set out in the docstring of
:mod:`domainscan.db.repository`, the batch row last (:func:`bump_batch`). A retried write recognizes the
rows of an attempt that committed by the timestamp they carry (:func:`admitted`, :func:`lease_queued`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domainscan.db.tables import batches, domains, jobs
from domainscan.errors import ErrorKind, StorageError
from domainscan.models import InvalidInput, Target

_IDS_PER_STATEMENT = 1000  # keeps IN (...) lists far below SQLite's and PostgreSQL's parameter limits

_T = TypeVar("_T")


def job_row(
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


def invalid_job_row(tenant: str, batch_id: int, item: InvalidInput, now: datetime) -> dict[str, Any]:
    """An invalid input's job, finished as it is made (the same error as its output record)."""
    where = f"line {item.line}: " if item.line is not None else ""
    return job_row(tenant, batch_id, item, None, now) | {
        "status": "failed",
        "error_kind": ErrorKind.INVALID_DOMAIN.value,
        "error": f"{where}{item.reason}",
        "finished_at": now,
    }


async def admitted(
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
    for chunk in chunked(names):
        known = select(domains.c.domain, domains.c.id).where(
            domains.c.tenant == tenant, domains.c.domain.in_(chunk)
        )
        domain_ids.update((row.domain, row.id) for row in await conn.execute(known))
    job_by_domain = {row.domain_id: row.id for row in rows if row.domain_id is not None}
    invalid_ids = [row.id for row in rows if row.domain_id is None]
    return in_input_order(items, domain_ids, job_by_domain, invalid_ids)


def in_input_order(
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


async def lease_queued(
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
    for chunk in chunked(ids):
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
        await bump_batch(conn, tenant, batch_id, heartbeat_at=now)
    return sorted(moved)


async def requeue(
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


async def has_batch(conn: AsyncConnection, tenant: str, batch_id: int) -> bool:
    stmt = select(batches.c.id).where(batches.c.tenant == tenant, batches.c.id == batch_id)
    return (await conn.execute(stmt)).first() is not None


async def recount(conn: AsyncConnection, tenant: str, batch_id: int) -> dict[str, int]:
    """The batch's total/ok/failed/invalid from its jobs (cancelled ones count as failed)."""
    counts = await conn.execute(
        select(jobs.c.status, jobs.c.error_kind, func.count())
        .where(jobs.c.tenant == tenant, jobs.c.batch_id == batch_id)
        .group_by(jobs.c.status, jobs.c.error_kind)
    )
    tally = {"total": 0, "ok": 0, "failed": 0, "invalid": 0}
    for job_status, error_kind, n in counts:
        tally["total"] += n
        if (counter := counter_of(job_status, error_kind)) is not None:
            tally[counter] += n
    return tally


def counter_of(status: str, error_kind: str | None) -> str | None:
    """The batch counter a job in this state counts in (None: not finished)."""
    if status == "succeeded":
        return "ok"
    if error_kind == ErrorKind.INVALID_DOMAIN:
        return "invalid"
    if status in ("failed", "cancelled"):
        return "failed"
    return None


async def bump_batch(
    conn: AsyncConnection,
    tenant: str,
    batch_id: int,
    *,
    heartbeat_at: datetime | None = None,
    **increments: int,
) -> None:
    """Add to the batch's counters and set its heartbeat; the batch row is locked last (see the module
    docstring of :mod:`domainscan.db.repository`). Raises StorageError if the tenant has no such batch."""
    values: dict[Any, Any] = {batches.c[name]: batches.c[name] + n for name, n in increments.items() if n}
    if heartbeat_at is not None:
        values[batches.c.heartbeat_at] = heartbeat_at
    if not values:
        return
    stmt = update(batches).where(batches.c.tenant == tenant, batches.c.id == batch_id).values(values)
    if (await conn.execute(stmt)).rowcount != 1:
        raise StorageError(f"batch {batch_id} of tenant {tenant!r} not found")


def chunked(values: Sequence[_T]) -> list[Sequence[_T]]:
    return [values[start : start + _IDS_PER_STATEMENT] for start in range(0, len(values), _IDS_PER_STATEMENT)]
