"""domainscan.db: URLs, engine settings, migrations and the repository, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from conftest import PGBOUNCER, POSTGRES
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import AsyncAdaptedQueuePool

from domainscan.config import DEFAULT_DB_POOL_SIZE
from domainscan.db import HEAD, Repository, open_repository, outcomes, redact, upgrade_database
from domainscan.db import engine as engine_module
from domainscan.db import repository as repository_module
from domainscan.db.engine import create_engine
from domainscan.db.errors import TransientStorageError, is_transient, wrap_db_errors
from domainscan.db.migrate import VERSION_TABLE
from domainscan.db.repository import LEASE_SECONDS, STALE_AFTER
from domainscan.db.tables import batches, domains, jobs, metadata
from domainscan.db.types import parse_iso
from domainscan.db.urls import to_async_url
from domainscan.errors import BatchInUse, ErrorKind, SchemaError, StorageError
from domainscan.models import RECORD_FIELDS, ImportCounts, InvalidInput, PageFacts, ScanResult, Target

_T = TypeVar("_T")

# --- helpers -----------------------------------------------------------------------------------------


def target(domain: str, *, line: int | None = None, raw: str | None = None) -> Target:
    return Target(domain=domain, host=domain, port=None, input=raw or domain, line=line, source="args")


def result(
    tenant: str,
    batch_id: int | None,
    job_id: int | None,
    domain: str | None,
    *,
    kind: ErrorKind | None = None,
    at: str = "2024-05-01T12:00:00Z",
    title: str | None = None,
    http_status: int | None = 200,
) -> ScanResult:
    return ScanResult(
        domain=domain,
        input=domain or "not a domain",
        tenant=tenant,
        scanned_at=at,
        error_kind=kind,
        error=None if kind is None else f"{kind} happened",
        job_id=job_id,
        batch_id=batch_id,
        url=None if domain is None else f"https://{domain}/",
        http_status=http_status,
        elapsed_ms=12,
        facts=PageFacts(title=title),
    )


def new_jobs(ids: list[int | None]) -> list[int]:
    """The job ids of add_jobs, when every item was new."""
    assert None not in ids
    return [job_id for job_id in ids if job_id is not None]


async def job_rows(url: str, tenant: str) -> dict[int, Any]:
    """The tenant's job rows by id, read behind the repository's back."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(jobs).where(jobs.c.tenant == tenant))).all()
    finally:
        await engine.dispose()
    return {row.id: row for row in rows}


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[Repository]:
    repository = await open_repository(database_url, auto_upgrade=True)
    yield repository
    await repository.close()


# --- URLs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver_url"),
    [
        ("sqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
        ("sqlite:////abs/path.db", "sqlite+aiosqlite:////abs/path.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        (
            "postgresql://user:pass@host:6543/db?sslmode=require",
            "postgresql+psycopg://user:pass@host:6543/db?sslmode=require",
        ),
        ("postgres://user@host/db", "postgresql+psycopg://user@host/db"),
        ("postgresql+psycopg://user@host/db", "postgresql+psycopg://user@host/db"),
        (
            "postgresql://u@/db?host=/var/run/postgresql&sslrootcert=/ca.pem",
            "postgresql+psycopg://u@/db?host=%2Fvar%2Frun%2Fpostgresql&sslrootcert=%2Fca.pem",
        ),
    ],
)
def test_urls_are_rewritten_to_the_async_driver(given: str, driver_url: str) -> None:
    assert to_async_url(given).render_as_string(hide_password=False) == driver_url


@pytest.mark.parametrize(
    "given",
    [
        "mysql://u:secret@host/db",
        "postgresql+asyncpg://u:secret@host/db",
        "host=db user=u password=secret",
        "sqlite://",
        "sqlite:///:memory:",
    ],
)
def test_unsupported_urls_raise_storage_error_without_the_password(given: str) -> None:
    with pytest.raises(StorageError) as caught:
        to_async_url(given)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (
            "postgresql://u:secret@host:6543/db?sslmode=require",
            "postgresql://u:***@host:6543/db?sslmode=require",
        ),
        ("postgres://u:secret@host/db?password=secret", "postgres://u:***@host/db?password=***"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
        ("sqlite:////abs/path.db", "sqlite:////abs/path.db"),
        ("nonsense://u:secret@", "nonsense://u:***@"),
        ("::not//u:secret@host", "::not//u:***@host"),
        ("host=db password=secret sslpassword='s e c r e t'", "host=db password=*** sslpassword=***"),
    ],
)
def test_redact_hides_passwords(given: str, shown: str) -> None:
    assert redact(given) == shown


async def test_unreachable_postgres_fails_fast_without_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        await open_repository("postgresql://u:secret@127.0.0.1:1/x", connect_timeout=2)
    message = str(caught.value)
    assert message.startswith("storage unavailable: cannot connect to postgresql://u:***@127.0.0.1:1/x (")
    assert "secret" not in message
    assert "\n" not in message
    assert time.monotonic() - started < 2


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word, like a firewalled pooler."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_silent_server_times_out_within_the_connect_timeout(silent_server: int) -> None:
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot connect to postgresql://u:\*\*\*@127\.0\.0\.1.*timeout"):
        await open_repository(f"postgresql://u:secret@127.0.0.1:{silent_server}/x", connect_timeout=2)
    assert 1.5 < time.monotonic() - started < 4


# --- engine settings and migrations ------------------------------------------------------------------


def test_postgres_pool_choice() -> None:
    url = "postgresql://u:secret@db.example:6543/app?sslmode=require"
    assert type(create_engine(url).pool).__name__ == "NullPool"
    pooled = create_engine(url, pool_size=3).pool
    assert isinstance(pooled, AsyncAdaptedQueuePool)
    assert (pooled.size(), pooled._pre_ping) == (3, True)


async def test_postgres_connections_are_safe_behind_a_transaction_pooler(database_server: Any) -> None:
    if database_server.name == "sqlite":
        pytest.skip("PostgreSQL only")
    engine = create_engine(database_server.new_url(), connect_timeout=5)
    try:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            assert raw.prepare_threshold is None  # no server-side prepared statements, even for executemany
            assert (await conn.exec_driver_sql("SHOW application_name")).scalar() == "domainscan"
    finally:
        await engine.dispose()


async def test_an_uncreatable_sqlite_path_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match=r"cannot create the directory of sqlite:////proc/nope/x\.db"):
        await open_repository("sqlite:////proc/nope/x.db", auto_upgrade=True)


async def test_sqlite_creates_the_directory_and_sets_up_each_connection(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'scan.db'}"
    repository = await open_repository(url, auto_upgrade=True)
    await repository.close()
    assert (tmp_path / "new" / "dir" / "scan.db").is_file()
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            settings = [
                (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            ]
    finally:
        await engine.dispose()
    assert settings == ["wal", 30000, 1]


async def test_missing_schema_raises_schema_error_with_the_command(database_server: Any) -> None:
    url = database_server.new_url()
    if database_server.name != "sqlite":  # a query with '&', as in a socket URL: the hint must quote it
        url += "?connect_timeout=5&application_name=domainscan"
    hint = "database schema is missing; run: domainscan db upgrade --database-url"
    with pytest.raises(SchemaError, match=hint) as caught:
        await open_repository(url)
    # As a shell reads it: an unquoted '&' would end the command there.
    words = shlex.shlex(str(caught.value).split("run: ", 1)[1], posix=True, punctuation_chars=True)
    words.whitespace_split = True
    command = list(words)
    assert command[:4] == ["domainscan", "db", "upgrade", "--database-url"]
    assert len(command) == 5
    assert make_url(command[4]) == make_url(url)  # pasted into a shell, it names the same database


async def test_upgrade_creates_the_schema_once_even_concurrently(database_server: Any) -> None:
    url = database_server.new_url()
    outcomes = await asyncio.gather(*(upgrade_database(url) for _ in range(3)))
    assert {revision for revision, _ in outcomes} == {HEAD}
    revision, where = await upgrade_database(url)
    assert revision == HEAD
    assert where.startswith(("sqlite:///", "postgresql://"))
    repository = await open_repository(url)  # the schema check passes
    await repository.close()


async def test_a_newer_schema_is_refused(database_server: Any) -> None:
    url = database_server.new_url()
    await upgrade_database(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    finally:
        await engine.dispose()
    with pytest.raises(SchemaError, match="revision 9999, newer than this domainscan"):
        await open_repository(url)
    with pytest.raises(SchemaError, match="9999"):
        await open_repository(url, auto_upgrade=True)


def test_head_is_the_last_migration() -> None:
    from alembic.script import ScriptDirectory

    from domainscan.db import migrate

    assert ScriptDirectory(str(migrate._SCRIPTS)).get_heads() == [HEAD]


async def test_migrations_create_what_the_tables_module_describes(database_server: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = database_server.new_url()
    await upgrade_database(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"version_table": VERSION_TABLE}), metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


_WORKER = """
import asyncio, sys
from domainscan.db import open_repository
from domainscan.models import Target

async def main(url, worker):
    repo = await open_repository(url, auto_upgrade=True)
    try:
        for n in range(5):
            batch_id = await repo.start_batch("shared", f"worker {worker}", {})
            names = [f"d{(worker * 7 + n * 3 + i) % 60}.com" for i in range(30)]
            ids = await repo.add_jobs("shared", batch_id, [Target(d, d, None, d) for d in names])
            await repo.mark_running("shared", [i for i in ids if i is not None])
            await repo.finish_batch("shared", batch_id, "complete")
    finally:
        await repo.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_processes_share_a_new_sqlite_file(tmp_path: Any) -> None:
    """Several domainscan processes creating, migrating and writing one SQLite file at the same time."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, str(n)], stderr=subprocess.PIPE, text=True)
        for n in range(6)
    ]
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 6, errors

    async def check() -> None:
        repository = await open_repository(url)
        try:
            names = [d.domain async for d in repository.list_domains("shared")]
            batches = await repository.list_batches("shared")
        finally:
            await repository.close()
        assert len(names) == len(set(names)) == 60
        assert len(batches) == 30
        assert all(b.total == 30 and b.duplicates == 0 for b in batches)

    asyncio.run(check())


# --- the repository ----------------------------------------------------------------------------------


async def test_batches_start_running_and_read_back(repo: Repository, tenant: str) -> None:
    batch_id = await repo.start_batch(tenant, "args, domains.txt", {"concurrency": 5, "sitemaps": False})
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.status, batch.source, batch.options) == (
        "running",
        "args, domains.txt",
        {"concurrency": 5, "sitemaps": False},
    )
    assert (batch.total, batch.ok, batch.failed, batch.invalid, batch.duplicates) == (0, 0, 0, 0, 0)
    assert batch.created_at.endswith("Z")
    assert batch.finished_at is None
    assert await repo.get_batch("someone-else", batch_id) is None


async def test_duplicates_get_no_job_and_are_counted(
    repo: Repository, tenant: str, database_url: str
) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    items: list[Target | InvalidInput] = [
        target("a.com", line=1),
        InvalidInput("not a domain", "no dot", line=2),
        target("b.com", line=3),
        target("a.com", line=4, raw="https://www.a.com/"),
        InvalidInput("not a domain", "no dot", line=5),
    ]
    ids = await repo.add_jobs(tenant, batch_id, items)
    assert [job_id is None for job_id in ids] == [False, False, False, True, False]
    assert len(set(ids) - {None}) == 4
    later = await repo.add_jobs(tenant, batch_id, [target("b.com"), target("c.com")])
    assert later[0] is None  # b.com already has a job in this batch
    assert later[1] is not None
    assert await repo.add_jobs(tenant, batch_id, [target("c.com")]) == [None]
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.total, batch.invalid, batch.duplicates) == (5, 2, 3)
    assert await repo.job_counts(tenant, batch_id) == {"queued": 3, "failed": 2}
    rows = await job_rows(database_url, tenant)
    a_com, invalid, b_com, invalid_again = (rows[job_id] for job_id in ids if job_id is not None)
    assert a_com.input == "a.com"  # the first occurrence is the one queued
    assert invalid.domain_id is None
    assert (invalid_again.input, invalid_again.line) == ("not a domain", 5)
    assert a_com.domain_id != b_com.domain_id


async def test_concurrent_add_jobs_create_one_row_per_domain(repo: Repository, tenant: str) -> None:
    names = [f"site{n:02d}.example" for n in range(40)]
    rng = random.Random(7)
    lists = [rng.sample(names[n : n + 20], 20) for n in range(20)]  # overlapping, each shuffled
    batch_ids = [await repo.start_batch(tenant, "args", {}) for _ in lists]
    outcomes = await asyncio.gather(
        *(
            repo.add_jobs(tenant, batch_id, [target(d) for d in domains])
            for batch_id, domains in zip(batch_ids, lists, strict=True)
        )
    )
    assert all(None not in ids for ids in outcomes)
    stored = [d.domain async for d in repo.list_domains(tenant)]
    assert stored == sorted({d for domains in lists for d in domains})
    for batch_id in batch_ids:
        assert await repo.job_counts(tenant, batch_id) == {"queued": 20}


async def test_job_lifecycle_records_states_and_times(
    repo: Repository, tenant: str, database_url: str
) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    ok_id, bad_id, invalid_id = new_jobs(
        await repo.add_jobs(
            tenant, batch_id, [target("ok.com"), target("bad.com"), InvalidInput("bad input", "no dot")]
        )
    )
    queued = await job_rows(database_url, tenant)
    assert [queued[i].status for i in (ok_id, bad_id, invalid_id)] == ["queued", "queued", "failed"]
    assert all(row.started_at is None for row in queued.values())
    assert queued[ok_id].finished_at is None
    assert queued[invalid_id].finished_at == queued[invalid_id].created_at  # finished as it was added

    assert await repo.mark_running(tenant, [ok_id, bad_id, invalid_id]) == sorted([ok_id, bad_id])
    running = await job_rows(database_url, tenant)
    assert [running[i].status for i in (ok_id, bad_id, invalid_id)] == ["running", "running", "failed"]
    assert running[ok_id].started_at is not None

    await repo.finish_jobs(
        tenant,
        batch_id,
        [
            result(tenant, batch_id, ok_id, "ok.com", title="OK"),
            result(tenant, batch_id, bad_id, "bad.com", kind=ErrorKind.DNS, http_status=None),
            result(tenant, batch_id, invalid_id, None, kind=ErrorKind.INVALID_DOMAIN, http_status=None),
        ],
    )
    done = await job_rows(database_url, tenant)
    assert [done[i].status for i in (ok_id, bad_id, invalid_id)] == ["succeeded", "failed", "failed"]
    assert [done[i].error_kind for i in (ok_id, bad_id, invalid_id)] == [None, "dns", "invalid_domain"]
    for row in (done[ok_id], done[bad_id]):
        assert row.created_at <= row.started_at <= row.finished_at
        assert row.elapsed_ms == 12
        assert row.result["job_id"] == row.id
        assert (row.lease_owner, row.lease_expires_at) == (None, None)
    assert done[invalid_id].error == "no dot"  # as add_jobs stored it: finishing it again changes nothing
    assert done[invalid_id].result is None
    await repo.mark_running(tenant, [ok_id])  # a finished job does not go back to running
    assert (await job_rows(database_url, tenant))[ok_id].status == "succeeded"


@pytest.mark.parametrize("combined", [True, False], ids=["one-operation", "control-two-operations"])
async def test_finish_jobs_leases_running_jobs_in_the_same_transaction(
    repo: Repository, tenant: str, database_url: str, combined: bool
) -> None:
    """A recorder flush is one operation: outcomes and the new running marks share one transaction,
    so one connection taken from the pool (with NullPool, PostgreSQL's default, one new connection).
    The control makes the same writes as two operations and takes two, so the count tells them apart."""
    batch_id = await repo.start_batch(tenant, "domains.txt", {})
    done_id, started_id, late_id = new_jobs(
        await repo.add_jobs(tenant, batch_id, [target("done.com"), target("started.com"), target("late.com")])
    )
    connections: list[object] = []
    event.listen(repo._engine.sync_engine, "checkout", lambda dbapi, *_: connections.append(dbapi))
    outcome = result(tenant, batch_id, done_id, "done.com", title="Done")
    if combined:
        stored = await repo.finish_jobs(
            tenant, batch_id, [outcome], running=[started_id, done_id], lease_seconds=60
        )
    else:
        await repo.mark_running(tenant, [started_id], lease_seconds=60)
        stored = await repo.finish_jobs(tenant, batch_id, [outcome])
    assert stored == 1
    assert len(connections) == (1 if combined else 2)
    rows = await job_rows(database_url, tenant)
    assert [rows[i].status for i in (done_id, started_id, late_id)] == ["succeeded", "running", "queued"]
    assert rows[started_id].lease_expires_at is not None
    assert (rows[done_id].lease_owner, rows[done_id].result["title"]) == (None, "Done")
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.ok, batch.failed) == (1, 0)


async def test_finish_jobs_updates_domains_and_counters(repo: Repository, tenant: str) -> None:
    batch_id = await repo.start_batch(tenant, "domains.txt", {})
    items: list[Target | InvalidInput] = [target(f"d{n}.com") for n in range(6)]
    items += [InvalidInput("x", "no dot"), target("d0.com")]
    ids = await repo.add_jobs(tenant, batch_id, items)
    results = [
        result(tenant, batch_id, ids[0], "d0.com", title="Zero"),
        result(tenant, batch_id, ids[1], "d1.com", title="One"),
        result(tenant, batch_id, ids[2], "d2.com", kind=ErrorKind.HTTP_STATUS, http_status=503),
        result(tenant, batch_id, ids[3], "d3.com", kind=ErrorKind.TIMEOUT, http_status=None),
        result(tenant, batch_id, ids[4], "d4.com", kind=ErrorKind.CANCELLED, http_status=None),
        result(tenant, batch_id, ids[6], None, kind=ErrorKind.INVALID_DOMAIN, http_status=None),
    ]
    await repo.finish_jobs(tenant, batch_id, results[:2])
    await repo.finish_jobs(tenant, batch_id, results[2:])

    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.total, batch.ok, batch.failed, batch.invalid, batch.duplicates) == (7, 2, 3, 1, 1)
    counts = await repo.job_counts(tenant, batch_id)
    assert counts == {"succeeded": 2, "failed": 3, "cancelled": 1, "queued": 1}
    assert sum(counts.values()) == batch.total

    zero = await repo.get_domain(tenant, "d0.com")
    assert zero is not None
    assert (zero.status, zero.error_kind, zero.http_status, zero.title, zero.url, zero.scans) == (
        "ok",
        None,
        200,
        "Zero",
        "https://d0.com/",
        1,
    )
    assert zero.last_scanned_at == "2024-05-01T12:00:00Z"
    assert list(zero.record) == list(RECORD_FIELDS)
    assert zero.record["title"] == "Zero"
    two = await repo.get_domain(tenant, "d2.com")
    assert two is not None
    assert (two.status, two.error_kind, two.http_status) == ("error", "http_status", 503)
    for unscanned in ("d4.com", "d5.com"):  # cancelled, and never started
        never = await repo.get_domain(tenant, unscanned)
        assert never is not None
        assert (never.status, never.last_scanned_at, never.scans, never.record) == (None, None, 0, {})

    finished = await repo.finish_batch(tenant, batch_id, "interrupted")
    assert (finished.status, finished.total, finished.ok, finished.failed, finished.invalid) == (
        "interrupted",
        7,
        2,
        3,
        1,
    )
    assert (finished.finished_at or "").endswith("Z")
    assert await repo.get_batch(tenant, batch_id) == finished


async def test_an_older_scan_never_replaces_newer_facts(repo: Repository, tenant: str) -> None:
    first = await repo.start_batch(tenant, "args", {})
    second = await repo.start_batch(tenant, "args", {})
    [old_job] = await repo.add_jobs(tenant, first, [target("a.com")])
    [new_job] = await repo.add_jobs(tenant, second, [target("a.com")])
    newer = result(tenant, second, new_job, "a.com", at="2024-05-02T08:00:00+00:00", title="New")
    older = result(tenant, first, old_job, "a.com", at="2024-05-02T09:59:00+02:00", title="Old")  # 07:59Z
    await repo.finish_jobs(tenant, second, [newer])
    await repo.finish_jobs(tenant, first, [older])
    domain = await repo.get_domain(tenant, "a.com")
    assert domain is not None
    assert (domain.title, domain.last_scanned_at, domain.scans) == ("New", "2024-05-02T08:00:00Z", 2)
    assert domain.record["job_id"] == new_job


async def test_tenants_never_see_or_touch_each_others_rows(
    repo: Repository, tenant: str, database_url: str
) -> None:
    alice, bob = f"alice-{tenant}", f"bob-{tenant}"
    batches = {t: await repo.start_batch(t, "args", {"who": t}) for t in (alice, bob)}
    ids = {
        t: await repo.add_jobs(t, batches[t], [target("shared.com"), target(f"{t}.com")])
        for t in (alice, bob)
    }
    assert set(ids[alice]).isdisjoint(ids[bob])

    for me, other in ((alice, bob), (bob, alice)):
        assert [d.domain async for d in repo.list_domains(me)] == sorted(["shared.com", f"{me}.com"])
        assert [b.id for b in await repo.list_batches(me)] == [batches[me]]
        assert await repo.get_batch(me, batches[other]) is None
        assert await repo.get_domain(me, f"{other}.com") is None
        assert await repo.job_counts(me, batches[other]) == {}

    bob_job = ids[bob][0]
    assert bob_job is not None
    await repo.mark_running(alice, [bob_job])
    with pytest.raises(StorageError, match="not in batch"):
        await repo.finish_jobs(alice, batches[alice], [result(alice, batches[alice], bob_job, "shared.com")])
    with pytest.raises(StorageError, match="not in batch"):
        await repo.finish_jobs(alice, batches[bob], [result(alice, batches[bob], bob_job, "shared.com")])
    with pytest.raises(StorageError):
        await repo.add_jobs(alice, batches[bob], [target("sneaky.com")])
    with pytest.raises(StorageError, match="not found"):
        await repo.finish_batch(alice, batches[bob], "complete")

    assert {row.status for row in (await job_rows(database_url, bob)).values()} == {"queued"}
    shared = await repo.get_domain(bob, "shared.com")
    assert shared is not None
    assert (shared.scans, shared.last_scanned_at) == (0, None)
    assert await repo.get_domain(alice, "sneaky.com") is None
    bob_batch = await repo.get_batch(bob, batches[bob])
    assert bob_batch is not None
    assert (bob_batch.status, bob_batch.total, bob_batch.ok) == ("running", 2, 0)


async def test_list_domains_pages_through_sorted_and_filtered(
    repo: Repository, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "PAGE_SIZE", 3)
    names = [f"{c}.com" for c in "jihgfedcba"] + ["a-b.com", "a.b.com"]
    batch_id = await repo.start_batch(tenant, "args", {})
    ids = await repo.add_jobs(tenant, batch_id, [target(n) for n in names])
    failed = {"c.com", "f.com", "i.com", "j.com"}
    await repo.finish_jobs(
        tenant,
        batch_id,
        [
            result(tenant, batch_id, job_id, name, kind=ErrorKind.CONNECT if name in failed else None)
            for job_id, name in zip(ids, names, strict=True)
        ],
    )
    assert [d.domain async for d in repo.list_domains(tenant)] == sorted(names)
    assert [d.domain async for d in repo.list_domains(tenant, limit=7)] == sorted(names)[:7]
    assert [d.domain async for d in repo.list_domains(tenant, status="error")] == sorted(failed)
    assert [d.domain async for d in repo.list_domains(tenant, status="error", limit=3)] == sorted(failed)[:3]
    assert [d.domain async for d in repo.list_domains(tenant, limit=0)] == []


async def test_list_batches_newest_first(repo: Repository, tenant: str) -> None:
    ids = [await repo.start_batch(tenant, f"run {n}", {}) for n in range(4)]
    assert [b.id for b in await repo.list_batches(tenant)] == ids[::-1]
    assert [b.source for b in await repo.list_batches(tenant, limit=2)] == ["run 3", "run 2"]


async def test_finish_batch_rejects_an_unknown_status(repo: Repository, tenant: str) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    with pytest.raises(ValueError, match="batch status must be one of"):
        await repo.finish_batch(tenant, batch_id, "done")


async def test_a_failed_write_stores_nothing(repo: Repository, tenant: str, database_url: str) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    ids = await repo.add_jobs(tenant, batch_id, [target("a.com"), target("b.com")])
    good = result(tenant, batch_id, ids[0], "a.com")
    stray = result(tenant, batch_id, 10**9, "b.com")
    with pytest.raises(StorageError):
        await repo.finish_jobs(tenant, batch_id, [good, stray])
    assert await repo.job_counts(tenant, batch_id) == {"queued": 2}
    domain = await repo.get_domain(tenant, "a.com")
    assert domain is not None
    assert domain.scans == 0


async def test_the_database_going_away_is_a_storage_error(database_server: Any, tenant: str) -> None:
    url = database_server.new_url()
    repository = await open_repository(url, auto_upgrade=True)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(jobs).values(status="queued"))  # touch the schema: it is there
            await conn.execute(text("DROP TABLE jobs"))
        with pytest.raises(StorageError, match=r"^storage error on (sqlite|postgresql)://"):
            await repository.job_counts(tenant, 1)
    finally:
        await engine.dispose()
        await repository.close()


async def test_admitting_and_finishing_one_batch_at_once_do_not_deadlock(
    repo: Repository, tenant: str, database_url: str
) -> None:
    """The pipeline registers later inputs (add_jobs) while it stores earlier results (finish_jobs).
    A repeated domain makes add_jobs lock that domain and then wait on its job row, which finish_jobs
    has just updated: finish_jobs must not then wait for the domain (locks in one order: domains first).
    A third transaction holding another domain lines the two up that way on PostgreSQL."""
    batch_id = await repo.start_batch(tenant, "args", {})
    ids = new_jobs(await repo.add_jobs(tenant, batch_id, [target("a.com"), target("b.com")]))
    await repo.mark_running(tenant, ids)
    blocker = create_engine(database_url)
    try:
        async with blocker.begin() as conn:
            await conn.execute(  # hold a.com, the first domain finish_jobs wants
                update(domains).where(domains.c.tenant == tenant, domains.c.domain == "a.com").values(scans=0)
            )
            finishing = asyncio.create_task(
                repo.finish_jobs(
                    tenant,
                    batch_id,
                    [result(tenant, batch_id, ids[0], "a.com"), result(tenant, batch_id, ids[1], "b.com")],
                )
            )
            await asyncio.sleep(0.3)
            admitting = asyncio.create_task(repo.add_jobs(tenant, batch_id, [target("b.com")]))
            await asyncio.sleep(0.3)
        outcomes = await asyncio.wait_for(asyncio.gather(finishing, admitting, return_exceptions=True), 60)
    finally:
        await blocker.dispose()
    assert list(outcomes) == [2, [None]]
    assert await repo.job_counts(tenant, batch_id) == {"succeeded": 2}
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.total, batch.ok, batch.duplicates) == (2, 2, 1)


# --- migration 0002 ----------------------------------------------------------------------------------


async def execute(url: str, *statements: Any) -> None:
    """Run statements behind the repository's back, in one transaction."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(statement)
    finally:
        await engine.dispose()


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def test_0002_upgrades_a_0001_database_in_place(
    database_server: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from domainscan.db import migrate

    url = database_server.new_url()
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "HEAD", "0001")
        assert (await upgrade_database(url))[0] == "0001"
    two_hours_ago = ago(7200)
    await execute(  # a batch a 0001-era process was running when it was killed
        url,
        insert(batches).values(
            id=1, tenant=tenant, status="running", source="old", options={}, total=1, created_at=two_hours_ago
        ),
        insert(domains).values(id=1, tenant=tenant, domain="old.com", first_seen_at=two_hours_ago),
        insert(jobs).values(
            id=1,
            tenant=tenant,
            batch_id=1,
            domain_id=1,
            input="old.com",
            status="running",
            created_at=two_hours_ago,
            started_at=two_hours_ago,
        ),
    )
    monkeypatch.setattr(migrate, "HEAD", "0002")  # (0003 and later are tested on their own)
    with pytest.raises(SchemaError, match="at revision 0001, this domainscan needs 0002"):
        await open_repository(url)
    assert (await upgrade_database(url))[0] == "0002"
    repository = await open_repository(url)
    try:
        old = await repository.get_batch(tenant, 1)
        assert old is not None
        assert (old.heartbeat_at, old.stale) == (None, True)  # no heartbeat: judged by created_at
        reopened = await repository.reopen_batch(tenant, 1)
        assert (reopened.status, reopened.stale) == ("running", False)
        assert [
            (j.id, j.domain, j.status) for j in await repository.next_jobs(tenant, 1, after_id=0, limit=9)
        ] == [
            (1, "old.com", "queued")  # a running job without a lease is anybody's
        ]
    finally:
        await repository.close()


# --- invalid inputs, leases, paging ------------------------------------------------------------------


async def test_invalid_inputs_are_stored_finished(repo: Repository, tenant: str) -> None:
    batch_id = await repo.start_batch(tenant, "domains.txt", {})
    ids = new_jobs(
        await repo.add_jobs(
            tenant,
            batch_id,
            [
                target("a.com", line=1),
                InvalidInput("not a domain", "no dot", line=2, source="domains.txt"),
                InvalidInput("x y", "has a space"),
            ],
        )
    )
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.total, batch.ok, batch.failed, batch.invalid, batch.duplicates) == (3, 0, 0, 2, 0)
    listed = [job async for job in repo.list_jobs(tenant, batch_id=batch_id)]
    assert [(j.id, j.domain, j.status, j.error_kind, j.error) for j in listed] == [
        (ids[0], "a.com", "queued", None, None),
        (ids[1], None, "failed", "invalid_domain", "line 2: no dot"),
        (ids[2], None, "failed", "invalid_domain", "has a space"),
    ]
    assert (listed[1].input, listed[1].line, listed[1].source) == ("not a domain", 2, "domains.txt")
    assert listed[1].finished_at is not None
    assert listed[1].started_at is None
    # The pipeline may still pass their records to finish_jobs: nothing changes, nothing counts twice.
    invalid = [
        result(tenant, batch_id, i, None, kind=ErrorKind.INVALID_DOMAIN, http_status=None) for i in ids[1:]
    ]
    assert await repo.finish_jobs(tenant, batch_id, invalid) == 0
    again = await repo.get_batch(tenant, batch_id)
    assert again is not None
    assert replace(again, heartbeat_at=None) == replace(batch, heartbeat_at=None)  # only a heartbeat
    assert await repo.next_jobs(tenant, batch_id, after_id=0, limit=10) == listed[:1]
    finished = await repo.finish_batch(tenant, batch_id, "interrupted")
    assert (finished.total, finished.invalid, finished.failed) == (3, 2, 0)


async def test_leases_are_taken_extended_and_released(
    repo: Repository, tenant: str, database_url: str
) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    await execute(database_url, update(batches).where(batches.c.id == batch_id).values(heartbeat_at=ago(600)))
    a, b, c = new_jobs(await repo.add_jobs(tenant, batch_id, [target(f"{n}.com") for n in "abc"]))
    before = datetime.now(UTC)
    assert await repo.mark_running(tenant, [b, a, a], owner="host1:1", lease_seconds=120) == [a, b]
    rows = await job_rows(database_url, tenant)
    for job_id in (a, b):
        assert (rows[job_id].status, rows[job_id].lease_owner) == ("running", "host1:1")
        assert rows[job_id].started_at >= before
        assert (
            timedelta(seconds=119)
            < rows[job_id].lease_expires_at - rows[job_id].started_at
            < timedelta(seconds=121)
        )
    assert (rows[c].status, rows[c].lease_owner, rows[c].lease_expires_at) == ("queued", None, None)
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert batch.heartbeat_at is not None
    assert parse_iso(batch.heartbeat_at) >= before  # leasing is a sign of life

    # Another process gets only what is still queued.
    assert await repo.mark_running(tenant, [a, b, c], owner="host2:2") == [c]
    assert (await job_rows(database_url, tenant))[a].lease_owner == "host1:1"

    # The idle heartbeat extends the owner's leases, and only those.
    await repo.heartbeat(tenant, batch_id, owner="host1:1", lease_seconds=3600)
    rows = await job_rows(database_url, tenant)
    assert rows[a].lease_expires_at - datetime.now(UTC) > timedelta(seconds=3500)
    assert rows[c].lease_expires_at - datetime.now(UTC) < timedelta(seconds=LEASE_SECONDS + 1)

    # Finishing releases the lease.
    assert await repo.finish_jobs(tenant, batch_id, [result(tenant, batch_id, a, "a.com")]) == 1
    rows = await job_rows(database_url, tenant)
    assert (rows[a].status, rows[a].lease_owner, rows[a].lease_expires_at) == ("succeeded", None, None)
    assert rows[b].lease_owner == "host1:1"

    with pytest.raises(StorageError, match="not found"):
        await repo.heartbeat(f"other-{tenant}", batch_id)


async def test_mark_running_defaults_to_this_process(
    repo: Repository, tenant: str, database_url: str
) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    ids = new_jobs(await repo.add_jobs(tenant, batch_id, [target("a.com")]))
    assert await repo.mark_running(tenant, ids) == ids
    row = (await job_rows(database_url, tenant))[ids[0]]
    assert row.lease_owner == f"{socket.gethostname()}:{os.getpid()}"
    assert row.lease_expires_at - row.started_at == timedelta(seconds=LEASE_SECONDS)
    assert await repo.mark_running(tenant, []) == []


async def test_next_jobs_pages_through_the_queued_jobs_by_id(repo: Repository, tenant: str) -> None:
    batch_id = await repo.start_batch(tenant, "list.txt", {})
    other_batch = await repo.start_batch(tenant, "args", {})
    items: list[Target | InvalidInput] = [
        Target(f"d{n}.com", f"d{n}.com", None, f"https://D{n}.com/", line=n + 1, source="list.txt")
        for n in range(7)
    ]
    ids = new_jobs(await repo.add_jobs(tenant, batch_id, [*items, InvalidInput("bad", "no dot", line=8)]))
    await repo.add_jobs(tenant, other_batch, [target("elsewhere.com")])
    await repo.add_jobs(f"other-{tenant}", batch_id, [])  # nothing: another tenant sees nothing below
    await repo.mark_running(tenant, [ids[1]])
    await repo.finish_jobs(tenant, batch_id, [result(tenant, batch_id, ids[2], "d2.com")])

    pages: list[list[int]] = []
    after = 0
    while page := await repo.next_jobs(tenant, batch_id, after_id=after, limit=2):
        pages.append([job.id for job in page])
        after = page[-1].id
    assert pages == [[ids[0], ids[3]], [ids[4], ids[5]], [ids[6]]]
    [first] = await repo.next_jobs(tenant, batch_id, after_id=0, limit=1)
    assert (first.domain, first.input, first.line, first.source, first.status) == (
        "d0.com",
        "https://D0.com/",
        1,
        "list.txt",
        "queued",
    )
    assert await repo.next_jobs(f"other-{tenant}", batch_id, after_id=0, limit=10) == []


async def test_list_jobs_filters_and_pages(
    repo: Repository, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "PAGE_SIZE", 2)
    first = await repo.start_batch(tenant, "args", {})
    second = await repo.start_batch(tenant, "args", {})
    one = new_jobs(await repo.add_jobs(tenant, first, [target(f"{n}.com") for n in "abcde"]))
    two = new_jobs(await repo.add_jobs(tenant, second, [target("a.com"), InvalidInput("?", "no dot")]))
    await repo.mark_running(tenant, one[:3])
    await repo.finish_jobs(
        tenant,
        first,
        [
            result(tenant, first, one[0], "a.com"),
            result(tenant, first, one[1], "b.com", kind=ErrorKind.DNS, http_status=None),
        ],
    )

    async def listed(**filters: Any) -> list[int]:
        return [job.id async for job in repo.list_jobs(tenant, **filters)]

    assert await listed() == one + two
    assert await listed(batch_id=first) == one
    assert await listed(batch_id=second) == two
    assert await listed(status="failed") == [one[1], two[1]]
    assert await listed(batch_id=first, status="queued") == one[3:]
    assert await listed(limit=3) == one[:3]
    assert await listed(batch_id=first, limit=0) == []
    [job] = [j async for j in repo.list_jobs(tenant, batch_id=first, status="succeeded")]
    assert (job.domain, job.elapsed_ms, job.to_dict()["job_id"]) == ("a.com", 12, one[0])
    assert job.started_at is not None
    assert job.finished_at is not None
    assert [j async for j in repo.list_jobs(f"other-{tenant}")] == []


# --- finishing twice, resuming -----------------------------------------------------------------------


async def test_finish_jobs_stores_each_outcome_once(repo: Repository, tenant: str) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    a, b, c = new_jobs(await repo.add_jobs(tenant, batch_id, [target(f"{n}.com") for n in "abc"]))
    await repo.mark_running(tenant, [a, b, c])
    results = [
        result(tenant, batch_id, a, "a.com", title="A"),
        result(tenant, batch_id, b, "b.com", kind=ErrorKind.TIMEOUT, http_status=None),
        result(tenant, batch_id, c, "c.com", kind=ErrorKind.CANCELLED, http_status=None),
    ]
    assert await repo.finish_jobs(tenant, batch_id, results) == 3
    once = await repo.get_batch(tenant, batch_id)
    assert once is not None
    assert (once.ok, once.failed) == (2 - 1, 2)
    # The same call again (a retry after a lost acknowledgement, a flush repeated): nothing moves.
    # The cancelled job is stored again (it has no outcome yet), but counts no more.
    assert await repo.finish_jobs(tenant, batch_id, results) == 1
    assert await repo.finish_jobs(tenant, batch_id, [results[0], results[0]]) == 0
    again = await repo.get_batch(tenant, batch_id)
    assert again is not None
    assert (again.total, again.ok, again.failed, again.heartbeat_at is not None) == (3, 1, 2, True)
    domain = await repo.get_domain(tenant, "a.com")
    assert domain is not None
    assert domain.scans == 1
    # A cancelled job scanned after all (resumed) moves from failed to ok.
    assert await repo.finish_jobs(tenant, batch_id, [result(tenant, batch_id, c, "c.com")]) == 1
    later = await repo.get_batch(tenant, batch_id)
    assert later is not None
    assert (later.ok, later.failed) == (2, 1)
    assert await repo.job_counts(tenant, batch_id) == {"succeeded": 2, "failed": 1}
    finished = await repo.finish_batch(tenant, batch_id, "complete")
    assert (finished.ok, finished.failed) == (later.ok, later.failed)  # the recount agrees


async def kill_minus_nine_batch(repo: Repository, tenant: str, url: str) -> tuple[int, dict[str, int]]:
    """A batch whose process died: jobs in every state, no heartbeat for two minutes."""
    batch_id = await repo.start_batch(tenant, "domains.txt", {"concurrency": 4})
    names = ["queued", "cancelled", "expired", "live", "nolease", "ok", "failed"]
    ids = new_jobs(
        await repo.add_jobs(
            tenant, batch_id, [*(target(f"{n}.com") for n in names), InvalidInput("bad", "no dot")]
        )
    )
    job = dict(zip([*names, "invalid"], ids, strict=True))
    await repo.mark_running(tenant, [job["cancelled"], job["ok"], job["failed"], job["nolease"]])
    await repo.mark_running(tenant, [job["expired"]], owner="dead:1", lease_seconds=-1)
    await repo.mark_running(tenant, [job["live"]], owner="alive:2", lease_seconds=600)
    await repo.finish_jobs(
        tenant,
        batch_id,
        [
            result(
                tenant,
                batch_id,
                job["cancelled"],
                "cancelled.com",
                kind=ErrorKind.CANCELLED,
                http_status=None,
            ),
            result(tenant, batch_id, job["ok"], "ok.com"),
            result(tenant, batch_id, job["failed"], "failed.com", kind=ErrorKind.DNS, http_status=None),
        ],
    )
    await execute(
        url,
        update(jobs).where(jobs.c.id == job["nolease"]).values(lease_owner=None, lease_expires_at=None),
        update(batches).where(batches.c.id == batch_id).values(heartbeat_at=ago(120)),
    )
    return batch_id, job


async def test_reopen_requeues_what_nobody_holds(repo: Repository, tenant: str, database_url: str) -> None:
    batch_id, job = await kill_minus_nine_batch(repo, tenant, database_url)
    dead = await repo.get_batch(tenant, batch_id)
    assert dead is not None
    assert (dead.status, dead.stale, dead.ok, dead.failed, dead.invalid) == ("running", True, 1, 2, 1)

    before = datetime.now(UTC)
    reopened = await repo.reopen_batch(tenant, batch_id, stale_after=60)
    assert (reopened.status, reopened.finished_at, reopened.stale) == ("running", None, False)
    assert parse_iso(reopened.heartbeat_at or "") >= before
    assert (reopened.total, reopened.ok, reopened.failed, reopened.invalid) == (8, 1, 1, 1)  # recounted
    rows = await job_rows(database_url, tenant)
    status = {name: rows[job_id].status for name, job_id in job.items()}
    assert status == {
        "queued": "queued",
        "cancelled": "queued",
        "expired": "queued",
        "live": "running",  # its owner is still at it: not scanned twice
        "nolease": "queued",
        "ok": "succeeded",
        "failed": "failed",
        "invalid": "failed",
    }
    for name in ("cancelled", "expired", "nolease"):
        row = rows[job[name]]
        assert (row.started_at, row.finished_at, row.lease_owner, row.lease_expires_at) == (None,) * 4
        assert (row.error_kind, row.error, row.result) == (None, None, None)
    assert rows[job["live"]].lease_owner == "alive:2"
    queued = await repo.next_jobs(tenant, batch_id, after_id=0, limit=100)
    assert [j.domain for j in queued] == ["queued.com", "cancelled.com", "expired.com", "nolease.com"]

    # Now it is running again, with a fresh heartbeat: a second resume is refused.
    with pytest.raises(BatchInUse, match=rf"^batch {batch_id} is still running \(heartbeat 0s ago\); "):
        await repo.reopen_batch(tenant, batch_id, stale_after=60)

    # When the live lease runs out too, the resumed run can take that job back.
    assert await repo.requeue_expired(tenant, batch_id) == 0
    await execute(database_url, update(jobs).where(jobs.c.id == job["live"]).values(lease_expires_at=ago(1)))
    assert await repo.requeue_expired(tenant, batch_id) == 1
    assert await repo.job_counts(tenant, batch_id) == {"queued": 5, "succeeded": 1, "failed": 2}


async def test_reopen_rules(repo: Repository, tenant: str, database_url: str) -> None:
    running = await repo.start_batch(tenant, "args", {})
    with pytest.raises(
        BatchInUse, match=r"still running \(heartbeat 0s ago\); wait for it or stop it first$"
    ):
        await repo.reopen_batch(tenant, running, stale_after=60)
    await execute(database_url, update(batches).where(batches.c.id == running).values(heartbeat_at=ago(30)))
    with pytest.raises(BatchInUse, match=r"heartbeat 30s ago"):
        await repo.reopen_batch(tenant, running, stale_after=60)
    assert (await repo.reopen_batch(tenant, running, stale_after=10)).status == "running"

    complete = await repo.start_batch(tenant, "args", {})
    [job] = await repo.add_jobs(tenant, complete, [target("a.com")])
    await repo.finish_jobs(tenant, complete, [result(tenant, complete, job, "a.com")])
    done = await repo.finish_batch(tenant, complete, "complete")
    assert await repo.reopen_batch(tenant, complete) == done
    assert await repo.get_batch(tenant, complete) == done

    interrupted = await repo.start_batch(tenant, "args", {})
    ids = new_jobs(await repo.add_jobs(tenant, interrupted, [target("a.com"), target("b.com")]))
    await repo.mark_running(tenant, ids)
    await repo.finish_jobs(
        tenant,
        interrupted,
        [
            result(tenant, interrupted, i, d, kind=ErrorKind.CANCELLED)
            for i, d in zip(ids, ["a.com", "b.com"], strict=True)
        ],
    )
    stopped = await repo.finish_batch(tenant, interrupted, "interrupted")
    assert (stopped.failed, stopped.finished_at is not None) == (2, True)
    resumed = await repo.reopen_batch(tenant, interrupted)  # however fresh its heartbeat
    assert (resumed.status, resumed.finished_at, resumed.failed) == ("running", None, 0)
    assert await repo.job_counts(tenant, interrupted) == {"queued": 2}

    for missing_tenant, batch_id in ((tenant, 10**9), (f"other-{tenant}", interrupted)):
        with pytest.raises(StorageError, match=rf"^batch {batch_id} not found for tenant"):
            await repo.reopen_batch(missing_tenant, batch_id)


async def test_a_running_batch_without_heartbeat_is_stale(
    repo: Repository, tenant: str, database_url: str
) -> None:
    alive = await repo.start_batch(tenant, "args", {})
    dead = await repo.start_batch(tenant, "args", {})
    stopped = await repo.start_batch(tenant, "args", {})
    await repo.finish_batch(tenant, stopped, "interrupted")
    old = ago(STALE_AFTER + 5)
    await execute(
        database_url,
        update(batches).where(batches.c.id.in_([dead, stopped])).values(heartbeat_at=old),
        update(batches).where(batches.c.id == alive).values(heartbeat_at=ago(STALE_AFTER - 5)),
    )
    listed = {b.id: b for b in await repo.list_batches(tenant)}
    assert {i: b.stale for i, b in listed.items()} == {alive: False, dead: True, stopped: False}
    info = await repo.get_batch(tenant, dead)
    assert info is not None
    assert info.stale
    assert info.to_dict()["stale"] is True
    assert parse_iso(info.to_dict()["heartbeat_at"]) == old.replace(microsecond=old.microsecond)
    await repo.heartbeat(tenant, dead)
    revived = await repo.get_batch(tenant, dead)
    assert revived is not None
    assert not revived.stale


# --- importing a spool -------------------------------------------------------------------------------


async def test_import_records_is_idempotent(repo: Repository, tenant: str, database_url: str) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    a, b, c, bad = new_jobs(
        await repo.add_jobs(
            tenant, batch_id, [target("a.com"), target("b.com"), target("c.com"), InvalidInput("?", "no dot")]
        )
    )
    await repo.mark_running(tenant, [a, b, c])
    await repo.finish_jobs(tenant, batch_id, [result(tenant, batch_id, c, "c.com")])  # stored in time
    spooled = [
        result(tenant, batch_id, a, "a.com", title="A").to_record(),
        result(tenant, batch_id, b, "b.com", kind=ErrorKind.TIMEOUT, http_status=None).to_record(),
        result(tenant, batch_id, c, "c.com").to_record(),
        result(tenant, batch_id, bad, None, kind=ErrorKind.INVALID_DOMAIN, http_status=None).to_record(),
    ]
    unusable = [
        result(tenant, None, None, "nojob.com").to_record(),  # the database was down from the start
        result(tenant, batch_id, 10**9, "gone.com").to_record(),  # not a job of this database
        result(tenant, batch_id, a, "someone-else.com").to_record(),  # a job id here, of another domain
        {**result(tenant, batch_id, a, "a.com").to_record(), "error_kind": "bogus"},
        {"tenant": tenant, "note": "not a record"},
    ]
    assert await repo.import_records(tenant, spooled + unusable) == ImportCounts(
        imported=2, already_stored=2, skipped=5
    )
    assert await repo.import_records(tenant, spooled + unusable) == ImportCounts(
        imported=0, already_stored=4, skipped=5
    )
    rows = await job_rows(database_url, tenant)
    assert [rows[i].status for i in (a, b, c, bad)] == ["succeeded", "failed", "succeeded", "failed"]
    assert rows[a].result == spooled[0]
    assert (rows[a].lease_owner, rows[b].lease_expires_at) == (None, None)
    domain = await repo.get_domain(tenant, "a.com")
    assert domain is not None
    assert (domain.title, domain.scans, domain.last_scanned_at) == ("A", 1, "2024-05-01T12:00:00Z")
    assert await repo.get_domain(tenant, "nojob.com") is None
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.total, batch.ok, batch.failed, batch.invalid) == (4, 2, 1, 1)
    assert await repo.import_records(tenant, []) == ImportCounts()


async def test_import_gives_unregistered_inputs_their_jobs(
    repo: Repository, tenant: str, database_url: str
) -> None:
    """Records of inputs a scan could not register (a batch id, no job id): the import makes each its
    job in the batch, or takes the one the batch has for that domain, and gives it the outcome; once."""
    batch_id = await repo.start_batch(tenant, "args", {})
    [a] = new_jobs(await repo.add_jobs(tenant, batch_id, [target("a.com")]))  # registered, never scanned
    invalid = result(tenant, batch_id, None, None, kind=ErrorKind.INVALID_DOMAIN, http_status=None)
    spooled = [
        result(tenant, batch_id, None, "a.com", title="A").to_record(),
        result(tenant, batch_id, None, "b.com", title="B").to_record(),
        result(tenant, batch_id, None, "c.com", kind=ErrorKind.TIMEOUT, http_status=None).to_record(),
        result(tenant, batch_id, None, "b.com", title="B").to_record(),  # twice in the spool
        invalid.to_record(),
        {**invalid.to_record(), "input": "another"},
    ]
    elsewhere = result(tenant, 10**9, None, "d.com").to_record()  # a batch this database does not have
    assert await repo.import_records(tenant, [*spooled, elsewhere]) == ImportCounts(
        imported=5, already_stored=1, skipped=1
    )
    assert await repo.import_records(tenant, [*spooled, elsewhere]) == ImportCounts(
        imported=0, already_stored=6, skipped=1
    )
    rows = await job_rows(database_url, tenant)
    assert len(rows) == 5
    assert rows[a].status == "succeeded"
    assert rows[a].result == spooled[0] | {"job_id": a}  # the record as stored names its new job
    by_input = {row.input: row for row in rows.values()}
    assert {name: row.status for name, row in by_input.items()} == {
        "a.com": "succeeded",
        "b.com": "succeeded",
        "c.com": "failed",
        "not a domain": "failed",
        "another": "failed",
    }
    assert by_input["c.com"].error_kind == "timeout"
    assert by_input["another"].error == "invalid_domain happened"
    assert await repo.job_counts(tenant, batch_id) == {"succeeded": 2, "failed": 3}
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.total, batch.ok, batch.failed, batch.invalid) == (5, 2, 1, 2)
    b = await repo.get_domain(tenant, "b.com")
    assert b is not None
    assert (b.title, b.scans) == ("B", 1)
    assert await repo.get_domain(tenant, "d.com") is None


async def test_import_refuses_another_tenants_records(repo: Repository, tenant: str) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    [a] = await repo.add_jobs(tenant, batch_id, [target("a.com")])
    mine = result(tenant, batch_id, a, "a.com").to_record()
    theirs = result(f"other-{tenant}", batch_id, a, "a.com").to_record()
    with pytest.raises(StorageError, match=rf"^record 2 belongs to tenant 'other-{tenant}', not '{tenant}'"):
        await repo.import_records(tenant, [mine, theirs])
    assert await repo.job_counts(tenant, batch_id) == {"queued": 1}


# --- transient faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (psycopg.errors.CrashShutdown("terminating connection because of crash of another process"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.TooManyConnections("sorry, too many clients already"), True),
        (psycopg.errors.ProtocolViolation("query_wait_timeout"), True),  # PgBouncer, 08P01
        (psycopg.OperationalError("pgbouncer cannot connect to server"), True),
        (
            psycopg.OperationalError(
                'connection to server at "127.0.0.1", port 6432 failed: FATAL:  database "scans" is disabled'
            ),
            True,
        ),
        (
            psycopg.OperationalError(
                'connection to server at "127.0.0.1", port 5432 failed: Connection refused'
            ),
            True,
        ),
        (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"), True),
        (psycopg.OperationalError("connection timeout expired"), True),
        (psycopg.OperationalError("the connection is closed"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (psycopg.errors.ProtocolViolation("no such database: nope"), False),
        (
            psycopg.OperationalError(
                'connection failed: FATAL:  password authentication failed for user "u"'
            ),
            False,
        ),
        (psycopg.errors.InvalidPassword('password authentication failed for user "u"'), False),
        (psycopg.errors.InvalidCatalogName('database "nope" does not exist'), False),
        (psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"), False),
        (psycopg.errors.UndefinedTable('relation "jobs" does not exist'), False),
        (psycopg.errors.CheckViolation('new row violates check constraint "ck_jobs_status"'), False),
        (sqlite3.IntegrityError("UNIQUE constraint failed: jobs.batch_id, jobs.domain_id"), False),
        (sqlite3.OperationalError("no such table: jobs"), False),
    ],
    ids=lambda value: value if isinstance(value, bool) else f"{type(value).__name__}: {value}"[:60],
)
def test_transient_errors_are_told_from_permanent_ones(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient
    wrapped = DBAPIError.instance("UPDATE jobs SET status = 'x'", {}, error, Exception)
    assert is_transient(wrapped) is transient
    with pytest.raises(StorageError) as caught, wrap_db_errors(make_url("postgresql://u:secret@db/x")):
        raise wrapped
    assert isinstance(caught.value, TransientStorageError) is transient
    assert "secret" not in str(caught.value)


def test_a_dropped_connection_is_transient_whatever_it_says() -> None:
    dropped = DBAPIError.instance("SELECT 1", {}, psycopg.OperationalError("database removed"), Exception)
    assert not is_transient(dropped)
    dropped.connection_invalidated = True  # SQLAlchemy saw the connection go
    assert is_transient(dropped)


@pytest.fixture
async def bare_repo(tmp_path: Any) -> AsyncIterator[Repository]:
    repository = Repository(create_engine(f"sqlite:///{tmp_path / 'retry.db'}"))
    yield repository
    await repository.close()


async def test_transient_failures_are_retried_then_given_up(
    bare_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "RETRY_INITIAL_WAIT", 0.01)
    monkeypatch.setattr(repository_module, "RETRY_JITTER", 0.01)
    calls: list[bool] = []

    async def flaky(retry: bool) -> str:
        calls.append(retry)
        if len(calls) < 3:
            raise TransientStorageError("storage unavailable: lost the connection to x (reset)")
        return "done"

    assert await bare_repo._retrying(flaky) == "done"
    assert calls == [False, True, True]

    calls.clear()

    async def broken(retry: bool) -> str:
        calls.append(retry)
        raise StorageError("storage error on x: duplicate key")

    with pytest.raises(StorageError, match=r"duplicate key$"):
        await bare_repo._retrying(broken)
    assert calls == [False]  # not retried

    calls.clear()
    monkeypatch.setattr(repository_module, "RETRY_BUDGET", 0.5)

    async def down(retry: bool) -> str:
        calls.append(retry)
        raise TransientStorageError("storage unavailable: cannot connect to x (connection refused)")

    started = time.monotonic()
    with pytest.raises(
        StorageError, match=r"connection refused\); gave up after \d+ attempts in 0\.\ds$"
    ) as caught:
        await bare_repo._retrying(down)
    assert not isinstance(caught.value, TransientStorageError)
    assert time.monotonic() - started < 1
    assert len(calls) >= 3


@pytest.mark.parametrize("patient", [False, True], ids=["last-try", "control-patient"])
async def test_a_last_try_to_finish_a_batch_makes_one_attempt(
    repo: Repository, tenant: str, monkeypatch: pytest.MonkeyPatch, patient: bool
) -> None:
    """After a storage error the run tries once to mark its batch: a database still away must not keep
    the process from exiting for the whole retry budget (the control retries, as every other write)."""
    batch_id = await repo.start_batch(tenant, "args", {})
    monkeypatch.setattr(repository_module, "RETRY_BUDGET", 0.5)
    monkeypatch.setattr(repository_module, "RETRY_INITIAL_WAIT", 0.01)
    monkeypatch.setattr(repository_module, "RETRY_JITTER", 0.01)
    attempts = [0]

    @asynccontextmanager
    async def down() -> AsyncIterator[Any]:
        attempts[0] += 1
        raise TransientStorageError("storage unavailable: cannot connect to x (connection refused)")
        yield

    monkeypatch.setattr(repo, "_write", down)
    with pytest.raises(StorageError, match=r"gave up after \d+ attempts"):
        await repo.finish_batch(tenant, batch_id, "interrupted", patient=patient)
    assert (attempts[0] == 1) != patient


async def test_every_write_survives_a_lost_commit_acknowledgement(
    repo: Repository, tenant: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit went through but the client never heard: the retry must not do it twice."""
    monkeypatch.setattr(repository_module, "RETRY_INITIAL_WAIT", 0.01)
    monkeypatch.setattr(repository_module, "RETRY_JITTER", 0.01)
    real_write = repo._write
    lose_next = [False]

    @asynccontextmanager
    async def write() -> AsyncIterator[Any]:
        async with real_write() as conn:
            yield conn
        if lose_next[0]:
            lose_next[0] = False
            raise TransientStorageError("storage unavailable: lost the connection (after the commit)")

    monkeypatch.setattr(repo, "_write", write)

    async def lossy(call: Awaitable[_T]) -> _T:
        lose_next[0] = True
        value = await call
        assert not lose_next[0], "the fault was not injected"
        return value

    batch_id = await lossy(repo.start_batch(tenant, "args", {}))
    assert [b.id for b in await repo.list_batches(tenant)] == [batch_id]
    items: list[Target | InvalidInput] = [target("a.com"), InvalidInput("?", "no dot"), target("a.com")]
    ids = await lossy(repo.add_jobs(tenant, batch_id, [*items, target("b.com"), target("c.com")]))
    assert [i is None for i in ids] == [False, False, True, False, False]
    assert await lossy(repo.add_jobs(tenant, batch_id, [target("b.com")])) == [None]  # a true duplicate
    a, _, _, b, c = ids
    assert a is not None
    assert b is not None
    assert c is not None
    assert await lossy(repo.mark_running(tenant, [a, b, c])) == sorted([a, b, c])
    results = [
        result(tenant, batch_id, a, "a.com"),
        result(tenant, batch_id, b, "b.com", kind=ErrorKind.CANCELLED, http_status=None),
    ]
    assert await lossy(repo.finish_jobs(tenant, batch_id, results)) == 2
    assert await lossy(repo.import_records(tenant, [result(tenant, batch_id, c, "c.com").to_record()])) == (
        ImportCounts(imported=1)
    )
    await execute(database_url, update(batches).where(batches.c.id == batch_id).values(heartbeat_at=ago(600)))
    reopened = await lossy(repo.reopen_batch(tenant, batch_id))
    assert (reopened.total, reopened.ok, reopened.failed, reopened.invalid, reopened.duplicates) == (
        4,
        2,
        0,
        1,
        2,
    )
    assert await repo.job_counts(tenant, batch_id) == {"succeeded": 2, "failed": 1, "queued": 1}
    scans = {d.domain: d.scans async for d in repo.list_domains(tenant)}
    assert scans == {"a.com": 1, "b.com": 0, "c.com": 1}


async def test_sqlite_locked_beyond_the_busy_timeout_is_retried(
    tmp_path: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "locked.db"
    repository = await open_repository(f"sqlite:///{path}", auto_upgrade=True)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        batch_id = await repository.start_batch(tenant, "args", {})
        blocker.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(1.0, blocker.execute, "COMMIT")
        started = time.monotonic()
        await repository.heartbeat(tenant, batch_id)  # "database is locked" for a second, then fine
        assert 0.9 < time.monotonic() - started < 5

        monkeypatch.setattr(repository_module, "RETRY_BUDGET", 0.5)
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(
            StorageError, match=r": database is locked; gave up after \d+ attempts in 0\.\ds$"
        ):
            await repository.heartbeat(tenant, batch_id)
        assert time.monotonic() - started < 2
        blocker.execute("COMMIT")
    finally:
        blocker.close()
        await repository.close()


def _database_name(url: str) -> str:
    return make_url(url).database or ""


async def _wait_for_backend(database: str, *, waiting: bool) -> list[int]:
    """The pids of domainscan's backends on ``database`` (only those waiting for a lock, if asked)."""
    query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'domainscan'"
    if waiting:
        query += " AND wait_event_type = 'Lock'"
    deadline = time.monotonic() + 10
    async with await psycopg.AsyncConnection.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        while time.monotonic() < deadline:
            pids = [row[0] for row in await (await admin.execute(query, (database,))).fetchall()]
            if pids:
                return pids
            await asyncio.sleep(0.05)
    raise AssertionError(f"no domainscan backend on {database} showed up")


@asynccontextmanager
async def batch_row_locked(url: str, batch_id: int) -> AsyncIterator[None]:
    """Hold the batch row from a separate, direct connection until the block ends."""
    async with await psycopg.AsyncConnection.connect(
        f"{POSTGRES}/{_database_name(url)}", application_name="blocker"
    ) as blocker:
        await blocker.execute("SELECT id FROM batches WHERE id = %s FOR UPDATE", (batch_id,))
        yield
        await blocker.rollback()


async def test_a_killed_connection_is_retried_in_a_new_one(
    database_server: Any, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """pg_terminate_backend on domainscan's backend while finish_jobs waits for a lock: the
    transaction is lost, the retry in a fresh connection stores everything, once."""
    if database_server.name == "sqlite":
        pytest.skip("PostgreSQL only")
    url = database_server.new_url()
    repository = await open_repository(url, auto_upgrade=True, connect_timeout=5)
    try:
        batch_id = await repository.start_batch(tenant, "args", {})
        ids = new_jobs(await repository.add_jobs(tenant, batch_id, [target("a.com"), target("b.com")]))
        await repository.mark_running(tenant, ids)
        results = [result(tenant, batch_id, ids[0], "a.com"), result(tenant, batch_id, ids[1], "b.com")]
        async with batch_row_locked(url, batch_id):
            finishing = asyncio.create_task(repository.finish_jobs(tenant, batch_id, results))
            pids = await _wait_for_backend(_database_name(url), waiting=True)
            async with await psycopg.AsyncConnection.connect(
                f"{POSTGRES}/postgres", autocommit=True
            ) as admin:
                for pid in pids:
                    await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await asyncio.sleep(0.2)
        assert await asyncio.wait_for(finishing, 30) == 2
        assert "terminating connection due to administrator command" in caplog.text
        batch = await repository.get_batch(tenant, batch_id)
        assert batch is not None
        assert (batch.ok, batch.failed) == (2, 0)
        assert [d.scans async for d in repository.list_domains(tenant)] == [1, 1]
    finally:
        await repository.close()


def _pgbouncer_admin(command: str) -> None:
    with psycopg.connect(f"{PGBOUNCER}/pgbouncer", autocommit=True) as admin:
        admin.execute(command)


@contextmanager
def pgbouncer_resumed_afterwards(database: str) -> Iterator[None]:
    """Whatever happens in the block, PgBouncer serves ``database`` again after it."""
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # "is not paused": already resumed
            _pgbouncer_admin(f'RESUME "{database}"')


async def test_pgbouncer_pause_and_kill_are_ridden_out(
    pgbouncer_server: Any, tenant: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = pgbouncer_server.new_url()
    database = _database_name(url)
    repository = await open_repository(url, auto_upgrade=True, connect_timeout=2)
    try:
        batch_id = await repository.start_batch(tenant, "args", {})
        [job] = await repository.add_jobs(tenant, batch_id, [target("a.com")])
        assert job is not None
        with pgbouncer_resumed_afterwards(database):
            # PAUSE: queries wait in the pooler until RESUME.
            _pgbouncer_admin(f'PAUSE "{database}"')
            leasing = asyncio.create_task(repository.mark_running(tenant, [job]))
            await asyncio.sleep(0.5)
            assert not leasing.done()
            _pgbouncer_admin(f'RESUME "{database}"')
            assert await asyncio.wait_for(leasing, 10) == [job]

            # KILL drops every client and server connection of the database (and pauses it): the
            # transaction in flight is lost and retried in a new connection. (Resumed before the retry
            # connects: a login that finds the database paused makes PgBouncer 1.18 wait its
            # server_login_retry, 15 s, before it connects to the server again. The retries ride that
            # out too, within RETRY_BUDGET, only slowly.)
            monkeypatch.setattr(repository_module, "RETRY_INITIAL_WAIT", 0.5)
            monkeypatch.setattr(repository_module, "RETRY_JITTER", 0)
            async with batch_row_locked(url, batch_id):
                finishing = asyncio.create_task(
                    repository.finish_jobs(tenant, batch_id, [result(tenant, batch_id, job, "a.com")])
                )
                await _wait_for_backend(database, waiting=True)
                _pgbouncer_admin(f'KILL "{database}"')
                _pgbouncer_admin(f'RESUME "{database}"')
            assert await asyncio.wait_for(finishing, 30) == 1
        assert "(database removed); trying again in 0.5s (attempt 2)" in caplog.text
        batch = await repository.get_batch(tenant, batch_id)
        assert batch is not None
        assert (batch.total, batch.ok) == (1, 1)
    finally:
        await repository.close()


@pytest.mark.parametrize("row_by_row", [False, True], ids=["as-built", "control-row-by-row"])
async def test_postgresql_writes_a_flush_in_one_statement_per_table(
    repo: Repository, tenant: str, database_url: str, row_by_row: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without prepared statements (the poolers) PostgreSQL parses and plans every statement it is
    sent: a flush's outcomes go as one JSON array per table, not one UPDATE per result. The control
    writes them row by row, as SQLite does, and the count tells them apart."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    if row_by_row:
        monkeypatch.setitem(outcomes.STATEMENTS, "postgresql", outcomes.STATEMENTS["sqlite"])
    batch_id = await repo.start_batch(tenant, "domains.txt", {})
    names = [f"d{n}.com" for n in range(20)]
    ids = new_jobs(await repo.add_jobs(tenant, batch_id, [target(name) for name in names]))
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith(("UPDATE domains", "UPDATE jobs")):
            sent.extend([statement.split()[1]] * (len(parameters) if many else 1))

    event.listen(repo._engine.sync_engine, "before_cursor_execute", count)
    results = [result(tenant, batch_id, i, name, title=name) for i, name in zip(ids, names, strict=True)]
    assert await repo.finish_jobs(tenant, batch_id, results) == 20
    assert sorted(sent) == (["domains"] * 20 + ["jobs"] * 20 if row_by_row else ["domains", "jobs"])
    for name in ("d0.com", "d19.com"):  # and what they wrote is what row by row writes
        stored = await repo.get_domain(tenant, name)
        assert stored is not None
        assert (stored.title, stored.scans, stored.status) == (name, 1, "ok")
    assert {row.status for row in (await job_rows(database_url, tenant)).values()} == {"succeeded"}


@pytest.mark.parametrize("pool_size", [DEFAULT_DB_POOL_SIZE, 0], ids=["batch-default", "control-no-pool"])
async def test_a_batch_keeps_a_few_connections_open_between_operations(
    database_url: str, tenant: str, pool_size: int
) -> None:
    """A new PostgreSQL connection is a new server process: a batch keeps a few open between its short
    transactions, directly and through PgBouncer alike (nothing prepared, no session state). The
    control opens one per operation, and the count tells them apart."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    repo = await open_repository(database_url, pool_size=pool_size, auto_upgrade=True)
    opened: list[object] = []
    event.listen(repo._engine.sync_engine, "connect", lambda dbapi, *_: opened.append(dbapi))
    try:
        batch_id = await repo.start_batch(tenant, "domains.txt", {})
        names = [f"d{n}.com" for n in range(10)]
        ids = new_jobs(await repo.add_jobs(tenant, batch_id, [target(name) for name in names]))
        for job_id, name in zip(ids, names, strict=True):
            await repo.finish_jobs(tenant, batch_id, [result(tenant, batch_id, job_id, name)])
        info = await repo.finish_batch(tenant, batch_id, "complete")
        pool = repo._engine.pool
        kept = pool.checkedin() if isinstance(pool, AsyncAdaptedQueuePool) else 0  # open, idle
    finally:
        await repo.close()
    assert (info.ok, info.status) == (10, "complete")
    if pool_size:
        assert len(opened) <= pool_size  # (the schema check at opening may have made the first)
        assert kept >= 1
    else:
        assert (len(opened), kept) == (13, 0)  # start, add, ten finishes, finish_batch
