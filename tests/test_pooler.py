"""PostgreSQL through PgBouncer in transaction mode (the way Supabase's Supavisor runs), under load.

Three `domainscan scan` processes write one tenant at the same time through the pooler, whose tiny
server pool (``default_pool_size = 2``) hands each transaction whichever server connection is free. A
driver that prepares statements server-side breaks there: the negative control shows that these very
checks catch it. Then two tenants share the pooled database and must not see or touch each other's rows.

Processes run inside one ``webfarm run`` namespace, where PgBouncer is reached through its Unix socket.
"""

from __future__ import annotations

import json
import random
import re
import shlex
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from farm import (
    DOMAINSCAN,
    FARM_NET,
    as_json,
    build_farm,
    db_rows,
    records,
    run_domainscan,
    run_in_farm,
    shared_database,
)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.webfarm]

SITES = 200  # the unique domains of the workload
LINES = 500  # lines in each process's input file
PROCESSES = 3
CONCURRENCY = 50
PROCESS_TIMEOUT = 120  # seconds; a stuck process is killed and shows up as exit 124, not a stuck test
INVALID = ["not a domain", "co.uk", "10.0.0.1"]  # in every file: invalid inputs are jobs too
TERMINAL = {"succeeded", "failed"}
PREPARED = re.compile(r"prepared statement", re.IGNORECASE)

# `domainscan` with psycopg's prepare_threshold=0 (prepare every statement server-side): the fault the
# pooler tests exist to catch.
PREPARING_DOMAINSCAN = [
    sys.executable,
    "-c",
    "import sys, domainscan.db.engine as engine; engine.PREPARE_THRESHOLD = 0; "
    "from domainscan.cli import run; sys.argv[0] = 'domainscan'; run()",
]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_farm(tmp_path_factory.mktemp("farm"), SITES)


@pytest.fixture(scope="module")
def expected(farm: Path) -> dict[str, dict[str, Any]]:
    rows = (json.loads(line) for line in (farm / "expected.jsonl").read_text().splitlines())
    return {row["domain"]: row for row in rows}


@pytest.fixture(scope="module")
def pooled(pgbouncer_server: Any) -> tuple[str, str]:
    """A database used through PgBouncer: (its URL here, its URL inside the farm)."""
    return shared_database(pgbouncer_server)


def spelling(domain: str, rng: random.Random) -> str:
    """One of the ways users write a domain; all of them normalize to ``domain``."""
    forms = [
        domain,
        domain.upper(),
        f"www.{domain}",
        f"https://www.{domain}/",
        f"http://{domain.upper()}/about?ref=list",
        f"{domain}.",
    ]
    return rng.choice(forms)


def write_inputs(domains: Sequence[str], directory: Path, seed: int) -> list[Path]:
    """One input file per process: every domain once, the invalid lines, and repeats up to LINES lines,
    spelled in different ways and shuffled differently in each file."""
    files = []
    for n in range(PROCESSES):
        rng = random.Random(seed * 100 + n)
        lines = [spelling(d, rng) for d in domains] + INVALID
        lines += [spelling(rng.choice(domains), rng) for _ in range(LINES - len(lines))]
        rng.shuffle(lines)
        path = directory / f"input{n}.txt"
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    return files


@dataclass
class Outcome:
    """What each of several processes run at once left behind."""

    codes: list[int]
    stdouts: list[str]
    stderrs: list[str]


def run_at_once(farm: Path, work: Path, commands: Sequence[Sequence[str]]) -> Outcome:
    """Start every command at the same moment inside one webfarm namespace; wait for all of them."""
    jobs = [
        f"( timeout -k 5 {PROCESS_TIMEOUT} {shlex.join(cmd)} >out{n} 2>err{n}; echo $? >code{n} ) &"
        for n, cmd in enumerate(commands)
    ]
    proc = run_in_farm(farm, ["sh", "-c", " ".join([*jobs, "wait"])], cwd=work, timeout=PROCESS_TIMEOUT + 30)
    assert proc.returncode == 0, proc.stderr
    count = range(len(commands))
    return Outcome(
        codes=[int((work / f"code{n}").read_text()) for n in count],
        stdouts=[(work / f"out{n}").read_text() for n in count],
        stderrs=[(work / f"err{n}").read_text() for n in count],
    )


def scan_command(program: Sequence[str], file: Path, tenant: str, url: str) -> list[str]:
    return [
        *program,
        "scan",
        "--file",
        str(file),
        "--tenant",
        tenant,
        "--concurrency",
        str(CONCURRENCY),
        "--format",
        "jsonl",
        "--fail-on",
        "never",
        "--timeout",
        "10",
        *FARM_NET,
        "--database-url",
        url,
    ]


def concurrent_workload(
    farm: Path, work: Path, pooled: tuple[str, str], tenant: str, *, program: Sequence[str]
) -> Outcome:
    domains = (farm / "domains.txt").read_text().split()
    files = write_inputs(domains, work, seed=3)
    return run_at_once(farm, work, [scan_command(program, file, tenant, pooled[1]) for file in files])


def assert_no_storage_errors(outcome: Outcome) -> None:
    """Every process exited 0 (--fail-on never) and said nothing about storage."""
    for n, (code, stderr) in enumerate(zip(outcome.codes, outcome.stderrs, strict=True)):
        assert code == 0, f"process {n} exited {code}: {stderr.strip()}"
        assert "storage" not in stderr.lower(), f"process {n}: {stderr.strip()}"
        assert not PREPARED.search(stderr), f"process {n}: {stderr.strip()}"
        assert "Traceback" not in stderr, f"process {n}: {stderr.strip()}"


def test_three_processes_share_one_tenant_through_pgbouncer(
    farm: Path,
    expected: dict[str, dict[str, Any]],
    pooled: tuple[str, str],
    tmp_path: Path,
) -> None:
    tenant = "pooled"
    outcome = concurrent_workload(farm, tmp_path, pooled, tenant, program=[DOMAINSCAN])
    assert_no_storage_errors(outcome)

    unique = set(expected)
    assert len(unique) == SITES
    per_batch = SITES + len(INVALID)  # the domains once each, and every invalid line
    ok = sum(r["status"] == "ok" for r in expected.values())
    assert 0 < ok < SITES  # the farm has broken sites: outcomes are not all alike

    # What each process printed: one record per domain and per invalid line, as the farm says.
    batch_ids = []
    for stdout in outcome.stdouts:
        recs = records(stdout)
        assert len(recs) == per_batch
        scanned = [r for r in recs if r["error_kind"] != "invalid_domain"]
        assert sorted(r["domain"] for r in scanned) == sorted(unique)
        for r in scanned:
            want = expected[r["domain"]]
            assert (r["domain"], r["status"], r["http_status"]) == (
                r["domain"],
                want["status"],
                want["http_status"],
            )
        assert sorted(r["input"] for r in recs if r["error_kind"] == "invalid_domain") == sorted(INVALID)
        (batch_id,) = {r["batch_id"] for r in recs}
        batch_ids.append(batch_id)
    assert len(set(batch_ids)) == PROCESSES

    url = pooled[0]
    # One row per unique domain, scanned once by each batch, with the farm's outcome.
    stored = db_rows(
        url, "select domain, status, http_status, scans from domains where tenant = :t", t=tenant
    )
    assert sorted(d for d, *_ in stored) == sorted(unique)
    for domain, status, http_status, scans in stored:
        want = expected[domain]
        assert (domain, status, http_status, scans) == (domain, want["status"], want["http_status"], 3)

    # Every job terminal, one per domain (and invalid line) per batch, outcomes as the farm says.
    jobs = db_rows(
        url,
        "select j.batch_id, d.domain, j.status, j.error_kind, j.result from jobs j "
        "left join domains d on d.id = j.domain_id where j.tenant = :t",
        t=tenant,
    )
    assert len(jobs) == PROCESSES * per_batch
    assert {status for _, _, status, _, _ in jobs} <= TERMINAL
    for batch_id in batch_ids:
        mine = [job for job in jobs if job[0] == batch_id]
        assert sorted(d for _, d, *_ in mine if d is not None) == sorted(unique)
        assert [kind for _, d, _, kind, _ in mine if d is None] == ["invalid_domain"] * len(INVALID)
    for _, domain, status, _, result in jobs:
        if domain is not None:
            want = expected[domain]
            assert (domain, status) == (domain, "succeeded" if want["status"] == "ok" else "failed")
            assert as_json(result)["http_status"] == want["http_status"]

    # Three complete batches whose counters add up, and agree with their jobs.
    batches = db_rows(
        url,
        "select id, status, total, ok, failed, invalid, duplicates, created_at, finished_at from batches "
        "where tenant = :t",
        t=tenant,
    )
    assert sorted(b[0] for b in batches) == sorted(batch_ids)
    for _, status, total, b_ok, failed, invalid, duplicates, _, _ in batches:
        assert status == "complete"
        assert total == b_ok + failed + invalid == per_batch
        assert (b_ok, invalid, duplicates) == (ok, len(INVALID), LINES - per_batch)
    assert sum(b[2] for b in batches) == len(jobs) == PROCESSES * per_batch
    assert max(b[7] for b in batches) < min(b[8] for b in batches)  # the three really ran at once


def test_negative_control_prepared_statements_break_behind_pgbouncer(
    farm: Path, pgbouncer_server: Any, tmp_path: Path
) -> None:
    """The same workload with server-side prepared statements must fail the same checks.

    It fails every time, not by chance: each client connection psycopg opens names its statements
    ``_pg3_0``, ``_pg3_1``, ... afresh, and PgBouncer (1.18, transaction mode) hands it server
    connections that keep what earlier clients prepared. With two server connections, the third client
    connection that prepares anything collides at the latest (``prepared statement "_pg3_0" already
    exists``), and one process alone opens more than three (schema check, start_batch, add_jobs...)."""
    pooled = shared_database(pgbouncer_server)
    outcome = concurrent_workload(farm, tmp_path, pooled, "prepared", program=PREPARING_DOMAINSCAN)
    with pytest.raises(AssertionError, match=PREPARED):
        assert_no_storage_errors(outcome)
    assert 3 in outcome.codes, outcome.stderrs
    failed = [stderr for code, stderr in zip(outcome.codes, outcome.stderrs, strict=True) if code == 3]
    assert all(PREPARED.search(stderr) for stderr in failed), failed
    assert all("storage" in stderr for stderr in failed), failed


NOT_FOUND = re.compile(r"^domainscan: no (domain|batch) \S+ (stored )?for tenant \S+$")


def read_json(*args: str) -> Any:
    """What a read command prints as JSON (run here, over TCP through the pooler), or None when it
    says there is no such domain or batch for the tenant (exit 1)."""
    proc = run_domainscan(None, *args, "--format", "json")
    if proc.returncode == 1 and NOT_FOUND.match(proc.stderr.strip()):
        return None
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def views(url: str, tenant: str, batch_ids: Sequence[int], shown: Sequence[str]) -> dict[str, Any]:
    """Everything a tenant can read back: every read command, run at once (they are slow to start)."""
    where = ["--tenant", tenant, "--database-url", url]
    commands = {
        "domains list": ["domains", "list", *where],
        "batches list": ["batches", "list", *where],
        **{f"batches show {b}": ["batches", "show", str(b), *where] for b in batch_ids},
        **{f"domains show {d}": ["domains", "show", d, *where] for d in shown},
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = dict(zip(commands, pool.map(lambda args: read_json(*args), commands.values()), strict=True))
    return outputs


def test_tenants_share_a_pooled_database_without_seeing_each_other(
    farm: Path, expected: dict[str, dict[str, Any]], pooled: tuple[str, str], tmp_path: Path
) -> None:
    url, farm_url = pooled
    ok = sorted(d for d, r in expected.items() if r["status"] == "ok")
    broken = sorted(d for d, r in expected.items() if r["status"] == "error")
    shared = [*ok[:12], *broken[:3]]
    alice_only, bob_only = ok[12], ok[13]
    alice, bob = "alice", "bob"

    def scan(tenant: str, domains: Sequence[str]) -> list[str]:
        options = ["--tenant", tenant, "--format", "jsonl", "--fail-on", "never", *FARM_NET]
        return [DOMAINSCAN, "scan", *domains, *options, "--database-url", farm_url]

    first = run_at_once(farm, tmp_path, [scan(alice, [*shared, alice_only]), scan(bob, [*shared, bob_only])])
    assert first.codes == [0, 0], first.stderrs
    batch = {
        tenant: records(stdout)[0]["batch_id"]
        for tenant, stdout in zip((alice, bob), first.stdouts, strict=True)
    }
    assert batch[alice] != batch[bob]
    own = {alice: sorted([*shared, alice_only]), bob: sorted([*shared, bob_only])}

    others_only = {alice: bob_only, bob: alice_only}
    seen = {
        me: views(url, me, [batch[alice], batch[bob]], [shared[0], others_only[me]]) for me in (alice, bob)
    }
    for me, other in ((alice, bob), (bob, alice)):
        mine = seen[me]
        assert [row["domain"] for row in mine["domains list"]] == own[me]
        assert {row["tenant"] for row in mine["domains list"]} == {me}
        assert [(b["batch_id"], b["tenant"]) for b in mine["batches list"]] == [(batch[me], me)]
        (my_batch,) = mine[f"batches show {batch[me]}"]
        assert (my_batch["tenant"], my_batch["total"], sum(my_batch["jobs"].values())) == (me, 16, 16)
        assert mine[f"batches show {batch[other]}"] is None
        (record,) = mine[f"domains show {shared[0]}"]
        assert (record["tenant"], record["batch_id"]) == (me, batch[me])
        assert record["title"] == expected[shared[0]]["title"]
        assert mine[f"domains show {others_only[me]}"] is None

    # Alice scans the shared domains again: her rows change, Bob's stay exactly as they were.
    again = run_at_once(farm, tmp_path, [scan(alice, shared)])
    assert again.codes == [0], again.stderrs
    new_batch = records(again.stdouts[0])[0]["batch_id"]
    alice_after = views(url, alice, [], [])
    bob_after = views(url, bob, [batch[bob], new_batch], [shared[0]])
    assert {row["domain"]: row["scans"] for row in alice_after["domains list"]} == {
        d: 2 if d in shared else 1 for d in own[alice]
    }
    assert [b["batch_id"] for b in alice_after["batches list"]] == [new_batch, batch[alice]]
    assert bob_after["domains list"] == seen[bob]["domains list"]
    assert bob_after["batches list"] == seen[bob]["batches list"]
    assert bob_after[f"batches show {batch[bob]}"] == seen[bob][f"batches show {batch[bob]}"]
    assert bob_after[f"domains show {shared[0]}"] == seen[bob][f"domains show {shared[0]}"]
    assert bob_after[f"batches show {new_batch}"] is None
