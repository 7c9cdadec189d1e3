"""domainscan.db: URLs, engine settings, migrations and the repository, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import AsyncAdaptedQueuePool

from domainscan.db import HEAD, Repository, open_repository, redact, upgrade_database
from domainscan.db import repository as repository_module
from domainscan.db.engine import create_engine
from domainscan.db.migrate import VERSION_TABLE
from domainscan.db.tables import domains, jobs, metadata
from domainscan.db.urls import to_async_url
from domainscan.errors import ErrorKind, SchemaError, StorageError
from domainscan.models import RECORD_FIELDS, InvalidInput, PageFacts, ScanResult, Target

# --- helpers -----------------------------------------------------------------------------------------


def target(domain: str, *, line: int | None = None, raw: str | None = None) -> Target:
    return Target(domain=domain, host=domain, port=None, input=raw or domain, line=line, source="args")


def result(
    tenant: str,
    batch_id: int,
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
    assert (batch.total, batch.duplicates) == (5, 3)
    assert await repo.job_counts(tenant, batch_id) == {"queued": 5}
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
    assert {row.status for row in queued.values()} == {"queued"}
    assert all(row.started_at is None and row.finished_at is None for row in queued.values())

    await repo.mark_running(tenant, [ok_id, bad_id, invalid_id])
    running = await job_rows(database_url, tenant)
    assert {row.status for row in running.values()} == {"running"}
    assert all(row.started_at is not None for row in running.values())

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
    for row in done.values():
        assert row.created_at <= row.started_at <= row.finished_at
        assert row.elapsed_ms == 12
        assert row.result["job_id"] == row.id
    await repo.mark_running(tenant, [ok_id])  # a finished job does not go back to running
    assert (await job_rows(database_url, tenant))[ok_id].status == "succeeded"


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
    assert outcomes == [None, [None]]
    assert await repo.job_counts(tenant, batch_id) == {"succeeded": 2}
    batch = await repo.get_batch(tenant, batch_id)
    assert batch is not None
    assert (batch.total, batch.ok, batch.duplicates) == (2, 2, 1)
