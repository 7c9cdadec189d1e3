"""Storing sitemap findings: the sitemap_files and sitemap_urls tables (migration 0003), on every backend.

A scan's files are upserted per (tenant, domain, url) in the same transaction as its job; a rescan
updates rows and drops what it no longer found; an older scan finishing late changes nothing; page URLs
are stored only when the scan kept them (--store-urls); a spool import stores the files too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select

from domainscan.db import Repository, open_repository, upgrade_database
from domainscan.db.engine import create_engine
from domainscan.db.outcomes import MAX_STORED_URL
from domainscan.db.tables import domains, sitemap_files, sitemap_urls
from domainscan.models import (
    SITEMAP_FIELDS,
    ScanResult,
    SitemapFileInfo,
    SitemapScan,
    Target,
    UrlEntry,
)


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[Repository]:
    repository = await open_repository(database_url, auto_upgrade=True)
    yield repository
    await repository.close()


def target(domain: str) -> Target:
    return Target(domain=domain, host=domain, port=None, input=domain)


def file(url: str, count: int = 3, **overrides: Any) -> SitemapFileInfo:
    values: dict[str, Any] = {
        "url": url,
        "kind": "urlset",
        "found_by": "robots",
        "url_count": count,
        "newest_lastmod": "2026-01-09T10:00:00+02:00",
        "oldest_lastmod": "2025-12-31",
        "http_status": 200,
        "error": None,
        "capped": False,
    }
    values.update(overrides)
    return SitemapFileInfo(**values)


def scanned(
    tenant: str,
    batch_id: int,
    job_id: int | None,
    domain: str,
    files: list[SitemapFileInfo] | None,
    *,
    at: str = "2024-05-01T12:00:00Z",
    urls: list[UrlEntry] | None = None,
) -> ScanResult:
    sitemap = None
    if files is not None:
        sitemap = SitemapScan(
            sitemaps=[f.url for f in files if f.found_by == "robots"],
            url_count=sum(f.url_count for f in files),
            robots_allows_root=True,
            files=files,
            urls=urls,
        )
    return ScanResult(
        domain=domain,
        input=domain,
        tenant=tenant,
        scanned_at=at,
        job_id=job_id,
        batch_id=batch_id,
        url=f"https://{domain}/",
        http_status=200,
        sitemap=sitemap,
    )


async def scan(
    repo: Repository, tenant: str, results: list[tuple[str, list[SitemapFileInfo] | None]], **kw: Any
) -> list[int]:
    """One batch that scans each (domain, files) and stores the results; the job ids."""
    batch_id = await repo.start_batch(tenant, "args", {})
    ids = await repo.add_jobs(tenant, batch_id, [target(d) for d, _ in results])
    assert None not in ids
    job_ids = [i for i in ids if i is not None]
    await repo.finish_jobs(
        tenant,
        batch_id,
        [scanned(tenant, batch_id, j, d, f, **kw) for j, (d, f) in zip(job_ids, results, strict=True)],
    )
    return job_ids


async def rows(url: str, tenant: str, table: Any = sitemap_files) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            stmt = (
                select(table, domains.c.domain)
                .join(domains, domains.c.id == table.c.domain_id)
                .where(table.c.tenant == tenant)
                .order_by(domains.c.domain, table.c.id)  # rows go in by URL within a domain
            )
            return list((await conn.execute(stmt)).all())
    finally:
        await engine.dispose()


async def test_files_are_stored_per_domain_and_a_rescan_updates_them(
    repo: Repository, tenant: str, database_url: str
) -> None:
    index = "https://a.com/sitemap_index.xml"
    child = "https://a.com/sitemap-1.xml"
    await scan(
        repo,
        tenant,
        [
            ("a.com", [file(index, 1, kind="sitemapindex"), file(child, 40, found_by="index")]),
            ("b.com", [file("https://b.com/sitemap.xml", 0, error="HTTP 404", http_status=404, kind=None)]),
            ("c.com", None),  # sitemaps not scanned (unreachable): no rows, nothing touched
        ],
    )
    first = await rows(database_url, tenant)
    assert [(r.domain, r.url, r.kind, r.found_by, r.url_count) for r in first] == [
        ("a.com", child, "urlset", "index", 40),
        ("a.com", index, "sitemapindex", "robots", 1),
        ("b.com", "https://b.com/sitemap.xml", None, "robots", 0),
    ]
    row = first[1]
    assert row.newest_lastmod == datetime(2026, 1, 9, 8, 0, tzinfo=UTC)  # W3C datetimes, stored in UTC
    assert row.oldest_lastmod == datetime(2025, 12, 31, tzinfo=UTC)
    assert (row.http_status, row.error, row.capped) == (200, None, False)
    assert row.scanned_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert (first[2].http_status, first[2].error) == (404, "HTTP 404")

    # A rescan: the index grew, its child is gone, a new file appeared; no duplicates, nothing stale.
    newer = "https://a.com/sitemap-2.xml"
    await scan(
        repo,
        tenant,
        [("a.com", [file(index, 2, kind="sitemapindex", capped=True), file(newer, 7, found_by="index")])],
        at="2024-06-01T00:00:00Z",
    )
    second = await rows(database_url, tenant)
    assert [(r.domain, r.url, r.url_count, r.capped) for r in second] == [
        ("a.com", index, 2, True),
        ("a.com", newer, 7, False),
        ("b.com", "https://b.com/sitemap.xml", 0, False),  # b.com was not rescanned: kept as it was
    ]
    assert second[0].id == first[1].id  # updated in place


async def test_an_older_scan_finishing_late_changes_nothing(
    repo: Repository, tenant: str, database_url: str
) -> None:
    first = await repo.start_batch(tenant, "args", {})
    second = await repo.start_batch(tenant, "args", {})
    [old_job] = await repo.add_jobs(tenant, first, [target("a.com")])
    [new_job] = await repo.add_jobs(tenant, second, [target("a.com")])
    newer = scanned(
        tenant, second, new_job, "a.com", [file("https://a.com/new.xml")], at="2024-05-02T08:00:00Z"
    )
    older = scanned(
        tenant, first, old_job, "a.com", [file("https://a.com/old.xml")], at="2024-05-02T07:00:00Z"
    )
    await repo.finish_jobs(tenant, second, [newer])
    await repo.finish_jobs(tenant, first, [older])
    assert [r.url for r in await rows(database_url, tenant)] == ["https://a.com/new.xml"]


async def test_page_urls_are_stored_only_when_kept(repo: Repository, tenant: str, database_url: str) -> None:
    sitemap = [file("https://a.com/sitemap.xml")]
    await scan(repo, tenant, [("a.com", sitemap)])  # no --store-urls: urls is None
    assert await rows(database_url, tenant, sitemap_urls) == []
    kept = [
        UrlEntry("https://a.com/", "2026-01-01", "daily", 1.0),
        UrlEntry("https://a.com/p/1", "not a date", "sometimes", None),  # kept, without what is invalid
        UrlEntry("https://a.com/p/1", "2026-01-02"),  # the same page twice: one row
        UrlEntry("https://a.com/" + "x" * MAX_STORED_URL),  # too long for the index: not stored
        UrlEntry("https://a.com/nul\x00"),  # PostgreSQL refuses NUL in text: not stored
    ]
    await scan(repo, tenant, [("a.com", sitemap)], urls=kept, at="2024-06-01T00:00:00Z")
    stored = await rows(database_url, tenant, sitemap_urls)
    assert [(r.loc, r.lastmod, r.changefreq, r.priority) for r in stored] == [
        ("https://a.com/", datetime(2026, 1, 1, tzinfo=UTC), "daily", 1.0),
        ("https://a.com/p/1", datetime(2026, 1, 2, tzinfo=UTC), None, None),
    ]
    # A later scan that kept URLs replaces them; one that did not keep any leaves them alone.
    await scan(
        repo, tenant, [("a.com", sitemap)], urls=[UrlEntry("https://a.com/q")], at="2024-07-01T00:00:00Z"
    )
    assert [r.loc for r in await rows(database_url, tenant, sitemap_urls)] == ["https://a.com/q"]
    await scan(repo, tenant, [("a.com", sitemap)], at="2024-08-01T00:00:00Z")
    assert [r.loc for r in await rows(database_url, tenant, sitemap_urls)] == ["https://a.com/q"]


async def test_tenants_keep_their_own_rows(repo: Repository, tenant: str, database_url: str) -> None:
    other = f"{tenant}-other"
    await scan(repo, tenant, [("a.com", [file("https://a.com/mine.xml")])])
    await scan(repo, other, [("a.com", [file("https://a.com/theirs.xml")])], at="2024-09-01T00:00:00Z")
    assert [r.url for r in await rows(database_url, tenant)] == ["https://a.com/mine.xml"]
    assert [r.url for r in await rows(database_url, other)] == ["https://a.com/theirs.xml"]


async def test_a_spool_import_stores_the_files_and_the_record_keeps_its_fields(
    repo: Repository, tenant: str, database_url: str
) -> None:
    batch_id = await repo.start_batch(tenant, "args", {})
    [job] = await repo.add_jobs(tenant, batch_id, [target("a.com")])
    assert job is not None
    record = scanned(tenant, batch_id, job, "a.com", [file("https://a.com/sitemap.xml", 5)]).to_record()
    broken = {**record, "sitemap_files": [{"no": "url"}]}  # not what a scan writes: skipped
    counts = await repo.import_records(tenant, [broken, record])
    assert (counts.imported, counts.skipped) == (1, 1)
    assert [(r.url, r.url_count) for r in await rows(database_url, tenant)] == [
        ("https://a.com/sitemap.xml", 5)
    ]
    stored = await repo.get_domain(tenant, "a.com")
    assert stored is not None
    assert list(stored.record)[-len(SITEMAP_FIELDS) :] == list(SITEMAP_FIELDS)  # in the output's order
    assert stored.record["sitemap_url_count"] == 5


async def test_0003_upgrades_a_0002_database_in_place(
    database_server: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from domainscan.db import migrate

    url = database_server.new_url()
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "HEAD", "0002")
        assert (await upgrade_database(url))[0] == "0002"
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(domains).values(id=1, tenant=tenant, domain="old.com", first_seen_at=datetime.now(UTC))
            )
    finally:
        await engine.dispose()
    assert (await upgrade_database(url))[0] == "0003"
    repository = await open_repository(url)
    try:
        await scan(repository, tenant, [("old.com", [file("https://old.com/sitemap.xml")])])
        assert [r.domain for r in await rows(url, tenant)] == ["old.com"]
    finally:
        await repository.close()
