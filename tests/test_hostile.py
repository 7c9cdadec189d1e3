"""End to end against the webfarm's hostile hosts: tarpits, drips, bombs, loops, legacy encodings,
garbage, and two SSRF traps that must never be reached."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from farm import build_farm, records, run_domainscan, score

pytestmark = [pytest.mark.e2e, pytest.mark.webfarm]

TIMEOUT = 5
TRAP = "TRAP-SECRET-METADATA"


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_farm(tmp_path_factory.mktemp("hostile"), 3, "--hostile")


@pytest.fixture(scope="module")
def scanned(farm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("hostile-run")
    db = work / "hostile.db"
    started = time.monotonic()
    proc = run_domainscan(
        farm,
        "scan",
        "--file",
        str(farm / "hostile.txt"),
        "--timeout",
        str(TIMEOUT),
        "--allow-net",
        "127.0.0.0/8",
        "--concurrency",
        "50",
        "--format",
        "jsonl",
        "--database-url",
        f"sqlite:///{db}",
    )
    wall = time.monotonic() - started
    out = work / "out.jsonl"
    out.write_text(proc.stdout)
    return {"proc": proc, "out": out, "db": db, "wall": wall, "records": records(proc.stdout)}


def test_every_hostile_host_ends_in_the_right_state(farm: Path, scanned: dict[str, Any]) -> None:
    result = score(
        farm,
        scanned["out"],
        "status,error_kind,http_status,title,emails,social",
        "--expected",
        "expected-hostile.jsonl",
        "--min",
        "1.0",
    )
    assert result.returncode == 0, result.stdout
    assert "score: 1.0000" in result.stdout


def test_traps_are_never_reached(scanned: dict[str, Any]) -> None:
    proc = scanned["proc"]
    assert TRAP not in proc.stdout + proc.stderr
    assert TRAP.encode() not in scanned["db"].read_bytes()
    by_domain = {r["domain"]: r for r in scanned["records"]}
    assert by_domain["private.test"]["error"] == (
        "blocked: private.test: 10.10.10.10 is a private address; use --allow-net to scan it"
    )
    assert by_domain["ssrf-redirect.test"]["redirects"] == ["http://ssrf-redirect.test/"]
    assert "169.254.169.254 is a link-local address" in by_domain["ssrf-redirect.test"]["error"]


def test_every_domain_finishes_within_its_deadline(scanned: dict[str, Any]) -> None:
    recs = scanned["records"]
    assert len(recs) == len({r["domain"] for r in recs}) == 18
    assert max(r["elapsed_ms"] for r in recs) <= (TIMEOUT + 2) * 1000
    # the whole batch runs concurrently: it takes one deadline, not one per hanging host
    assert scanned["wall"] < TIMEOUT + 10


def test_caps_hold_and_are_reported(scanned: dict[str, Any]) -> None:
    by_domain = {r["domain"]: r for r in scanned["records"]}
    huge, bomb = by_domain["huge.test"], by_domain["bomb.test"]
    assert huge["truncated"] is True
    assert huge["bytes"] == 5 * 1024 * 1024
    assert bomb["truncated"] is True
    assert bomb["bytes"] == 5 * 1024 * 1024
    assert by_domain["manylinks.test"]["page"]["links"] == 50_000


def test_the_default_policy_blocks_a_private_farm(farm: Path) -> None:
    """Without --allow-net, sites on loopback are refused: the safe default, with the reason."""
    proc = run_domainscan(
        farm,
        "scan",
        "site-00001.test",
        "private.test",
        "--no-store",
        "--format",
        "jsonl",
        env={"DOMAINSCAN_ALLOW_NET": ""},
    )
    recs = {r["domain"]: r for r in records(proc.stdout)}
    assert proc.returncode == 1
    assert {r["error_kind"] for r in recs.values()} == {"blocked"}
    assert "127.0.0.1 is a loopback address; use --allow-net" in recs["site-00001.test"]["error"]


def test_the_records_are_all_one_line_messages(scanned: dict[str, Any]) -> None:
    for record in scanned["records"]:
        assert record["error"] is None or "\n" not in record["error"]
        assert json.dumps(record)  # serializable, whatever the site sent
