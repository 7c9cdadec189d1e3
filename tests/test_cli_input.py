"""Bad input through the installed command: one clear line each, the good lines still scanned,
nothing interpolated into SQL. No network needed: nothing here reaches a site."""

from __future__ import annotations

from pathlib import Path

import pytest
from farm import records, run_domainscan, sqlite_rows

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" * 100), "looks binary"),
        (lambda p: p.mkdir(), "directory"),
    ],
    ids=["binary-file", "directory"],
)
def test_unreadable_sources_exit_2_with_one_line(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "domains.txt"
    make(path)  # type: ignore[operator]
    proc = run_domainscan(None, "scan", "--file", str(path), "--no-store")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_bad_lines_become_records_and_sql_stays_data(tmp_path: Path) -> None:
    hostile = (
        b"x.com'; DROP TABLE jobs;--\n"
        + b"a" * 1_000_000
        + b".com\n"
        + b"caf\xe9-latin1.com\n"
        + b'"quoted".com\n'
        + b"robert'); DELETE FROM domains;--.example\n"
    )
    src = tmp_path / "hostile.txt"
    src.write_bytes(hostile)
    db = tmp_path / "h.db"
    proc = run_domainscan(
        None,
        "scan",
        "--file",
        str(src),
        "--database-url",
        f"sqlite:///{db}",
        "--tenant",
        "t1",
        "--format",
        "jsonl",
    )
    assert proc.returncode == 1, proc.stderr
    recs = records(proc.stdout)
    assert len(recs) == 5
    assert {r["error_kind"] for r in recs} == {"invalid_domain"}
    reasons = [r["error"] for r in recs]
    assert any("line too long" in r for r in reasons)
    assert any("not UTF-8" in r for r in reasons)
    # the statements were stored as text, and the tables they name are intact
    stored = {row[0] for row in sqlite_rows(db, "select input from jobs where tenant = 't1'")}
    assert "x.com'; DROP TABLE jobs;--" in stored
    assert sqlite_rows(db, "select count(*) from jobs") == [(5,)]
    assert sqlite_rows(db, "select total, invalid from batches") == [(5, 5)]


@pytest.mark.parametrize("tenant", ["acme'; DROP TABLE batches;--", "a b", "", "x" * 65, "ümlaut"])
def test_tenants_outside_the_alphabet_are_refused(tenant: str, tmp_path: Path) -> None:
    proc = run_domainscan(
        None, "scan", "example.com", "--tenant", tenant, "--database-url", f"sqlite:///{tmp_path}/t.db"
    )
    assert proc.returncode == 2
    assert "invalid tenant" in proc.stderr
    assert not (tmp_path / "t.db").exists()


def test_import_says_what_it_did_and_refuses_a_database_without_the_batch(tmp_path: Path) -> None:
    """`domainscan import` counts in words; a spool none of whose records has its batch in the database
    (the wrong --database-url, most likely) is an error, exit 2, and stores nothing."""
    db, other = tmp_path / "scan.db", tmp_path / "other.db"
    scan = run_domainscan(
        None, "scan", "bad_label.com", "nodot", "--tenant", "t", "--database-url", f"sqlite:///{db}"
    )
    assert scan.returncode == 1, scan.stderr
    spool = tmp_path / "spool.jsonl"
    spool.write_text(scan.stdout)
    loaded = run_domainscan(None, "import", str(spool), "--tenant", "t", "--database-url", f"sqlite:///{db}")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stderr == f"{spool}: 0 imported, 2 already stored, 0 skipped\n"
    wrong = run_domainscan(
        None, "import", str(spool), "--tenant", "t", "--database-url", f"sqlite:///{other}"
    )
    assert wrong.returncode == 2
    assert wrong.stderr == (
        f"domainscan: none of the 2 records in {spool} belongs to a batch of this database "
        "(is --database-url the one the scan used?); nothing was imported\n"
    )
    assert sqlite_rows(other, "select count(*) from jobs") == [(0,)]
