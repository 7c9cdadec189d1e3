"""End to end: `domainscan scan --sitemaps` and `domainscan sitemaps` against the webfarm, whose sites serve
robots.txt and plain, gzip and index sitemaps (and some none at all), on every database backend.

Scored by `webfarm score` like the homepage fields; the rows must land in sitemap_files, once per file
however often a domain is scanned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from farm import (
    FARM_NET,
    build_farm,
    db_rows,
    expected_records,
    records,
    run_domainscan,
    score,
    shared_database,
)

from domainscan.models import SITEMAP_FIELDS

pytestmark = [pytest.mark.e2e, pytest.mark.webfarm]

SITES = 100
HOMEPAGE_FIELDS = "status,http_status,title,description,language,emails,phones,social,tech"


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_farm(tmp_path_factory.mktemp("sitemap-farm"), SITES)


@pytest.fixture(scope="module")
def expected(farm: Path) -> dict[str, dict[str, Any]]:
    return expected_records(farm)


@pytest.fixture(scope="module")
def sitemap_batch(
    farm: Path, database_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One `scan --sitemaps` of the whole farm, per backend."""
    url, farm_url = shared_database(database_server)
    proc = run_domainscan(
        farm,
        "scan",
        "--sitemaps",
        *FARM_NET,
        "--file",
        str(farm / "domains.txt"),
        "--format",
        "jsonl",
        "--tenant",
        "acme",
        "--database-url",
        farm_url,
        "--timeout",
        "10",
        "--fail-on",
        "never",
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path_factory.mktemp("sitemap-batch") / "out.jsonl"
    out.write_text(proc.stdout)
    return {"url": url, "farm_url": farm_url, "out": out, "records": records(proc.stdout)}


def test_sitemap_fields_score_and_the_homepage_fields_keep_theirs(
    farm: Path, sitemap_batch: dict[str, Any]
) -> None:
    sitemaps = score(farm, sitemap_batch["out"], "sitemaps,sitemap_url_count", "--min-each", "0.99")
    assert sitemaps.returncode == 0, sitemaps.stdout
    assert "missing from results" not in sitemaps.stdout
    assert "sitemaps: " in sitemaps.stdout  # scored, not skipped for want of the key
    homepage = score(farm, sitemap_batch["out"], HOMEPAGE_FIELDS, "--min-each", "0.98")
    assert homepage.returncode == 0, homepage.stdout


def test_every_reachable_domain_has_the_sitemap_fields(
    sitemap_batch: dict[str, Any], expected: dict[str, dict[str, Any]]
) -> None:
    recs = sitemap_batch["records"]
    assert len(recs) == SITES
    for record in recs:
        assert list(record)[-len(SITEMAP_FIELDS) :] == list(SITEMAP_FIELDS), record["domain"]
        if record["status"] == "ok":
            assert record["robots_allows_root"] is True  # the farm disallows /admin/ only
        for file in record["sitemap_files"]:
            assert file["error"] is None, file
            assert file["kind"] in ("urlset", "sitemapindex")
            assert file["found_by"] in ("robots", "index", "probe")
    kinds = {f["kind"] for r in recs for f in r["sitemap_files"]}
    assert kinds == {"urlset", "sitemapindex"}  # the farm's index sitemaps were followed
    broken = [r for r in recs if r["error_kind"] == "http_status"]
    assert broken  # a homepage that answers 4xx/5xx still had its robots.txt and sitemaps looked at
    assert all(r["sitemap_url_count"] == 0 for r in broken)


def test_files_are_stored_once_and_a_rescan_updates_them(farm: Path, sitemap_batch: dict[str, Any]) -> None:
    url, recs = sitemap_batch["url"], sitemap_batch["records"]
    files = {(r["domain"], f["url"]) for r in recs for f in r["sitemap_files"]}
    stored_sql = (
        "select d.domain, f.url, f.url_count, f.scanned_at from sitemap_files f"
        " join domains d on d.id = f.domain_id where f.tenant = 'acme'"
    )
    first = {(d, u): (n, at) for d, u, n, at in db_rows(url, stored_sql)}
    assert set(first) == files
    by_file = {(r["domain"], f["url"]): f["url_count"] for r in recs for f in r["sitemap_files"]}
    assert {key: n for key, (n, _) in first.items()} == by_file

    again = [r["domain"] for r in recs if r["sitemap_files"]][:20]
    proc = run_domainscan(
        farm,
        "scan",
        "--sitemaps",
        *FARM_NET,
        *again,
        "--tenant",
        "acme",
        "--database-url",
        sitemap_batch["farm_url"],
        "--format",
        "jsonl",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    second = {(d, u): (n, at) for d, u, n, at in db_rows(url, stored_sql)}
    assert set(second) == files  # no duplicates, nothing lost
    moved = {key for key in files if second[key][1] != first[key][1]}
    assert moved == {key for key in files if key[0] in again}  # the rescanned domains' rows, updated
    (options,) = db_rows(url, "select options from batches where tenant = 'acme' order by id limit 1")
    stored = json.loads(options[0]) if isinstance(options[0], str) else options[0]
    assert (stored["sitemaps"], stored["homepage"], stored["store_urls"]) == (True, True, 0)


def test_the_sitemaps_command_scans_sitemaps_alone(farm: Path, expected: dict[str, dict[str, Any]]) -> None:
    wanted = [d for d, r in expected.items() if r["status"] == "ok" and r["sitemaps"]][:3]
    proc = run_domainscan(farm, "sitemaps", *FARM_NET, *wanted, "--no-store", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    got = {r["domain"]: r for r in records(proc.stdout)}
    assert set(got) == set(wanted)
    for domain in wanted:
        record, exp = got[domain], expected[domain]
        assert record["status"] == "ok"
        assert record["url"].endswith("/robots.txt")
        assert record["http_status"] == 200
        assert record["title"] is None  # no homepage was read
        assert record["sitemaps"] == exp["sitemaps"]
        assert record["sitemap_url_count"] == exp["sitemap_url_count"]


def test_store_urls_fills_sitemap_urls_up_to_the_cap(
    farm: Path, tmp_path: Path, expected: dict[str, dict[str, Any]]
) -> None:
    wanted = [d for d, r in expected.items() if r["status"] == "ok" and r["sitemap_url_count"] > 5][:5]
    db = tmp_path / "urls.db"
    proc = run_domainscan(
        farm,
        "scan",
        "--sitemaps",
        "--store-urls",
        "5",
        *FARM_NET,
        *wanted,
        "--database-url",
        f"sqlite:///{db}",
        "--format",
        "jsonl",
    )
    assert proc.returncode == 0, proc.stderr
    counts = dict(
        db_rows(
            f"sqlite:///{db}",
            "select d.domain, count(*) from sitemap_urls u join domains d on d.id = u.domain_id group by 1",
        )
    )
    assert counts == dict.fromkeys(wanted, 5)
    assert db_rows(f"sqlite:///{db}", "select count(*) from sitemap_urls where lastmod is null") == [(0,)]


def test_without_the_option_records_have_no_sitemap_fields(
    farm: Path, expected: dict[str, dict[str, Any]]
) -> None:
    wanted = list(expected)[:5]
    proc = run_domainscan(
        farm, "scan", *FARM_NET, *wanted, "--no-store", "--format", "jsonl", "--fail-on", "never"
    )
    assert proc.returncode == 0, proc.stderr
    recs = records(proc.stdout)
    assert len(recs) == 5
    assert all(not set(SITEMAP_FIELDS) & set(r) for r in recs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "example.com", "--store-urls", "5"], "add --sitemaps"),
        (["sitemaps"], "nothing to scan"),
        (["sitemaps", "example.com", "--store-urls", "-1"], "--store-urls"),
    ],
    ids=["store-urls-alone", "no-input", "negative-store-urls"],
)
def test_sitemap_usage_errors(args: list[str], message: str) -> None:
    proc = run_domainscan(None, *args, "--no-store")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
