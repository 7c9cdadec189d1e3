"""Interrupted, killed, or the database drops: the installed `domainscan` in real processes (issue 5).

A webfarm serves the sites; five of them (every tenth) send their homepage slowly, in SLOW_SECONDS, so
when a signal or a fault comes, fetches are in flight. Each test starts a scan, waits until the batch is under
way (jobs finished and a slow one running, read from the database, never guessed with a sleep), does
something unkind to it, and checks what a user would: the exit code, the lines on stderr, `jobs list`
and `batches show`, and the rows themselves. The end is always the issue's acceptance: the batch
complete, exactly one job per domain with the farm's outcome, each domain scanned once, and the union
of the runs' outputs covering every input.

The farm runs for the whole module in one network namespace; commands enter it with ``nsenter``, so the
process a test signals is `domainscan` itself. Inside it PostgreSQL and PgBouncer are reached through
their Unix sockets; the checks run here, over TCP (straight to PostgreSQL while PgBouncer is paused).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from conftest import PGBOUNCER, POSTGRES, PostgresServer, alive
from farm import (
    DOMAINSCAN,
    FARM_NET,
    WEBFARM,
    build_farm,
    db_rows,
    records,
    run_domainscan,
    shared_database,
    sqlite_rows,
    unavailable,
)

pytestmark = [pytest.mark.e2e]

SITES = 80
SLOW_EVERY = 10  # every tenth site of domains.txt (the first SLOW_SITES with a homepage) is slow,
SLOW_SITES = 5
SLOW_SECONDS = 4  # sending its homepage in about this many seconds
CONCURRENCY = SLOW_SITES  # so that a batch, or what is left of it, takes one slow round: about 5 s
PROMPT = 2.0  # seconds within which a signalled scan must have cancelled its fetches and exited
STALE_AFTER = 15.0  # domainscan.db.repository.STALE_AFTER, as a user sees it in `batches show`
PROCESS_TIMEOUT = 120  # seconds; a stuck process fails the test instead of hanging it
TERMINAL = {"succeeded", "failed"}
RESUMED = "domainscan scan --resume {batch} --tenant {tenant}"

T = TypeVar("T")


# --- the farm ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Farm:
    """A running `webfarm run` namespace, entered with nsenter, and what its sites should give."""

    directory: Path
    pid: int
    expected: dict[str, str]  # domain -> "ok" | "error"
    slow: frozenset[str]

    @property
    def domains(self) -> list[str]:
        return list(self.expected)

    def command(self, program: Sequence[str]) -> list[str]:
        return ["nsenter", "--target", str(self.pid), "--net", "--mount", *program]


def slow_down(farm: Path) -> frozenset[str]:
    """Make SLOW_SITES sites, SLOW_EVERY apart, send their homepage at size/SLOW_SECONDS bytes a second
    (nginx's limit_rate, per host, added to the routes the farm's nginx includes); returns them."""
    rates: list[str] = []
    slow: set[str] = set()
    for domain in (farm / "domains.txt").read_text().split()[SLOW_EVERY - 1 :: SLOW_EVERY]:
        for host in (domain, f"www.{domain}"):  # the redirects' targets are www.
            page = farm / "sites" / host / "index.html"
            if page.exists() and len(slow) < SLOW_SITES:
                rates.append(f"  {host} {max(256, page.stat().st_size // SLOW_SECONDS)};")
                slow.add(domain)
    routes = farm / "routes.conf"
    slow_map = "\n".join(["map $host $farm_rate {", "  default 0;", *rates, "}", "limit_rate $farm_rate;"])
    routes.write_text(routes.read_text() + "\n" + slow_map + "\n")
    return frozenset(slow)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    if subprocess.run(["nsenter", "--version"], capture_output=True, check=False).returncode != 0:
        unavailable("nsenter (util-linux) is missing")
    directory = build_farm(tmp_path_factory.mktemp("slowfarm"), SITES)
    slow = slow_down(directory)
    expected = {
        row["domain"]: row["status"]
        for row in map(json.loads, (directory / "expected.jsonl").read_text().splitlines())
    }
    assert len(slow) == SLOW_SITES
    assert "error" in expected.values()  # and broken ones: outcomes are not all alike
    holder = directory / "holder.pid"
    keeper = subprocess.Popen(
        [
            str(WEBFARM / "webfarm"),
            "run",
            str(directory),
            "--",
            "sh",
            "-c",
            f"echo $$ >{holder}; exec sleep 900",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: (holder.exists() and holder.read_text().strip().isdigit()) or keeper.poll() is not None,
            timeout=30,
            what="the webfarm to start",
        )
        if keeper.poll() is not None:
            pytest.fail(f"webfarm run exited {keeper.returncode}: {keeper.communicate()[1].decode()}")
        yield Farm(directory, int(holder.read_text()), expected, slow)
    finally:
        if holder.exists():
            os.kill(int(holder.read_text()), signal.SIGTERM)  # the sleep: webfarm then stops nginx
        try:
            keeper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            keeper.kill()
            keeper.wait()


# --- processes -----------------------------------------------------------------------------------------


@dataclass
class Scan:
    """A `domainscan` process started inside the farm, its output going to files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"domainscan did not finish within {timeout:.0f}s: {self.stderr()}")

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def records(self) -> list[dict[str, Any]]:
        return records(self.stdout())


def start(farm: Farm, work: Path, name: str, *args: str, program: Sequence[str] = (DOMAINSCAN,)) -> Scan:
    """Start `domainscan ARGS` in the farm; the user data directory (spools) is under ``work``."""
    env = {**os.environ, "XDG_DATA_HOME": str(work / "data")}
    env.pop("PYTHONUNBUFFERED", None)  # buffered as from cron: what a kill -9 leaves is what users get
    out, err = work / f"{name}.out", work / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            farm.command([*program, *args]), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env
        )
    return Scan(proc, out, err)


def scan_args(farm: Farm, tenant: str, farm_url: str, *extra: str) -> list[str]:
    return [
        "scan",
        "--file",
        str(farm.directory / "domains.txt"),
        "--tenant",
        tenant,
        "--database-url",
        farm_url,
        "--concurrency",
        str(CONCURRENCY),
        "--format",
        "jsonl",
        *FARM_NET,
        *extra,
    ]


def resume_args(batch: int, tenant: str, farm_url: str) -> list[str]:
    return [
        "scan",
        "--resume",
        str(batch),
        "--tenant",
        tenant,
        "--database-url",
        farm_url,
        "--format",
        "jsonl",
    ]


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until ``condition()`` is truthy (and return it), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f}s for {what}")
        time.sleep(interval)
    return value


def read_json(url: str, tenant: str, *args: str) -> Any:
    """What a read command (`jobs list`, `batches show`) prints as JSON, run here."""
    proc = run_domainscan(None, *args, "--tenant", tenant, "--database-url", url, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --- the database --------------------------------------------------------------------------------------


def job_states(url: str, tenant: str) -> list[tuple[int, str, str]]:
    """(batch id, domain, status) of every job of the tenant, read behind domainscan's back."""
    rows = db_rows(
        url,
        "select j.batch_id, d.domain, j.status from jobs j join domains d on d.id = j.domain_id "
        "where j.tenant = :t order by j.id",
        t=tenant,
    )
    return [(int(b), str(d), str(s)) for b, d, s in rows]


def under_way(farm: Farm, scan: Scan, url: str, tenant: str) -> int:
    """Wait until the scan has finished some jobs and is fetching a slow homepage; its batch id."""

    def check() -> int | None:
        if scan.proc.poll() is not None:
            pytest.fail(
                f"the scan ended (exit {scan.proc.returncode}) before it was interrupted: {scan.stderr()}"
            )
        states = job_states(url, tenant)
        finished = sum(status in TERMINAL for _, _, status in states)
        fetching_slow = any(status == "running" and d in farm.slow for _, d, status in states)
        return states[0][0] if finished >= 10 and fetching_slow else None

    return wait_for(check, timeout=60, what="the batch to be under way")


def assert_finished_once(
    url: str, tenant: str, batch: int, farm: Farm, outputs: Sequence[Sequence[dict[str, Any]]]
) -> None:
    """The acceptance: the batch complete, one terminal job per domain with the farm's outcome, every
    domain scanned once, and the runs' outputs together holding one outcome for every input."""
    want = {d: "succeeded" if status == "ok" else "failed" for d, status in farm.expected.items()}
    ok = sum(status == "succeeded" for status in want.values())
    ((status, total, b_ok, failed, invalid),) = db_rows(
        url,
        "select status, total, ok, failed, invalid from batches where id = :b and tenant = :t",
        b=batch,
        t=tenant,
    )
    assert (status, total, b_ok, failed, invalid) == ("complete", len(want), ok, len(want) - ok, 0)
    jobs = [(d, s) for b, d, s in job_states(url, tenant) if b == batch]
    assert Counter(d for d, _ in jobs) == Counter(farm.domains)  # exactly one job per input
    assert dict(jobs) == want
    scans = dict(db_rows(url, "select domain, scans from domains where tenant = :t", t=tenant))
    assert scans == dict.fromkeys(want, 1)  # nothing scanned twice (a cancelled scan does not count)
    outcomes = [r for output in outputs for r in output if r["error_kind"] != "cancelled"]
    assert Counter(r["input"] for r in outcomes) == Counter(farm.domains)
    assert {r["domain"]: r["status"] for r in outcomes} == farm.expected
    assert {(r["tenant"], r["batch_id"]) for output in outputs for r in output} == {(tenant, batch)}


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """PostgreSQL without the pooler (the ``postgresql`` backend of conftest, alone)."""
    server = PostgresServer("postgresql", admin_url=POSTGRES, client_url=POSTGRES)
    if (reason := server.unavailable()) is not None:
        unavailable(reason)
    yield server
    server.close()


def database(backend: str, request: pytest.FixtureRequest, work: Path) -> tuple[str, str]:
    """A new database: its URL here and inside the farm."""
    if backend == "sqlite":  # its schema made first, so that the checks can read it from the start
        url = f"sqlite:///{work / 'scans.db'}"
        upgraded = run_domainscan(None, "db", "upgrade", "--database-url", url)
        assert upgraded.returncode == 0, upgraded.stderr
        return url, url
    server = request.getfixturevalue("pgbouncer_server" if backend == "pgbouncer" else "postgres_server")
    return shared_database(server)


def direct(url: str) -> str:
    """A PgBouncer database URL as PostgreSQL's own (to look while the pooler is paused)."""
    return url.replace(PGBOUNCER, POSTGRES, 1)


# --- SIGINT and SIGTERM --------------------------------------------------------------------------------


@pytest.mark.webfarm
@pytest.mark.parametrize(
    ("signum", "backend"),
    [
        pytest.param(signal.SIGINT, "sqlite", id="SIGINT-sqlite"),
        pytest.param(signal.SIGTERM, "pgbouncer", id="SIGTERM-pgbouncer", marks=pytest.mark.postgres),
    ],
)
def test_a_signal_cancels_in_flight_scans_and_resume_finishes_the_batch(
    signum: signal.Signals,
    backend: str,
    farm: Farm,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tenant: str,
) -> None:
    url, farm_url = database(backend, request, tmp_path)
    first = start(farm, tmp_path, "first", *scan_args(farm, tenant, farm_url))
    batch = under_way(farm, first, url, tenant)

    sent = time.monotonic()
    os.kill(first.pid, signum)
    code = first.wait()
    took = time.monotonic() - sent
    assert code == 128 + signum, first.stderr()
    assert took < PROMPT, f"exited {took:.1f}s after the signal, with slow fetches in flight"
    lines = first.stderr().splitlines()
    assert f"batch {batch} interrupted" in lines[-2]  # the summary
    assert lines[-1] == (
        f"domainscan: interrupted; batch {batch} is marked interrupted; resume with: "
        f"{RESUMED.format(batch=batch, tenant=tenant)} --database-url URL"
    )

    assert_counters_agree(url, tenant, batch)
    jobs = read_json(url, tenant, "jobs", "list", "--batch", str(batch))
    states = Counter(job["status"] for job in jobs)
    assert len(jobs) == len(farm.domains)
    assert states["cancelled"] >= 1
    assert states["succeeded"] + states["failed"] >= 10
    assert "running" not in states  # every fetch in flight was stopped and recorded
    cancelled = {job["domain"] for job in jobs if job["status"] == "cancelled"}
    assert cancelled & farm.slow  # among them a slow homepage that was still coming in
    assert all(
        job["error_kind"] == "cancelled" and job["finished_at"] for job in jobs if job["domain"] in cancelled
    )
    # What was printed is what was stored: the cancelled records, and the outcomes before them.
    printed = first.records()
    assert {r["domain"] for r in printed if r["error_kind"] == "cancelled"} == cancelled
    stored = {job["domain"]: job["status"] for job in jobs}
    assert all(stored[r["domain"]] in TERMINAL for r in printed if r["error_kind"] != "cancelled")
    (shown,) = read_json(url, tenant, "batches", "show", str(batch))
    assert (shown["status"], shown["stale"], shown["jobs"]) == ("interrupted", False, dict(states))

    second = start(farm, tmp_path, "second", *resume_args(batch, tenant, farm_url))
    code = second.wait()
    resumed = second.records()
    assert code == (1 if any(r["status"] == "error" for r in resumed) else 0), second.stderr()
    assert f"batch {batch} complete" in second.stderr()
    # Only what had no outcome: the cancelled and the never started, each once.
    assert sorted(r["domain"] for r in resumed) == sorted(d for d, s in stored.items() if s not in TERMINAL)
    assert_finished_once(url, tenant, batch, farm, [printed, resumed])


# --- kill -9, and a second Ctrl-C -----------------------------------------------------------------------

KILL_TIMEOUT = 8  # --timeout: leases last 18 s, longer than a batch takes to look stale (15 s)


@dataclass
class Crash:
    """One run stopped without a chance to tidy up, and its resume."""

    name: str
    backend: str
    twice: bool = False  # two Ctrl-C in a row instead of kill -9
    urls: tuple[str, str] = ("", "")
    first: Scan | None = None
    batch: int = 0


def children(pid: int) -> set[int]:
    """The processes `pid` started (its parse workers), from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.update(int(child) for child in task.read_text().split())
    return found


def crash(scan: Scan, *, twice: bool) -> None:
    """Stop `scan` without a chance to tidy up; its parse workers must not outlive it."""
    workers = children(scan.pid)
    assert workers, "the crash tests run with --parse-workers 1"
    if twice:  # the second lands while the first is still tidying up: leave at once
        os.kill(scan.pid, signal.SIGINT)
        time.sleep(0.02)
        os.kill(scan.pid, signal.SIGINT)
        assert scan.wait() == 128 + signal.SIGINT, scan.stderr()
    else:
        os.kill(scan.pid, signal.SIGKILL)
        assert scan.wait() == -signal.SIGKILL
    wait_for(
        lambda: not any(map(alive, workers)) or None, timeout=5, what="parse workers to exit with their scan"
    )


def assert_counters_agree(url: str, tenant: str, batch: int) -> None:
    """However a run stopped, the batch's counters agree with its jobs: every write was whole."""
    ((total, ok, failed, invalid),) = db_rows(
        url, "select total, ok, failed, invalid from batches where id = :b and tenant = :t", b=batch, t=tenant
    )
    states = Counter(status for b, _, status in job_states(url, tenant) if b == batch)
    assert (total, ok, failed, invalid) == (
        sum(states.values()),
        states["succeeded"],
        states["failed"] + states["cancelled"],  # a cancelled scan counts as failed until resumed
        0,
    )


@pytest.mark.webfarm
@pytest.mark.postgres
def read_lines(stream: Any, count: int, timeout: float) -> list[bytes]:
    """The next `count` lines a process writes to the pipe `stream`, failing after `timeout` s."""
    data, deadline = b"", time.monotonic() + timeout
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(left, 0))
        assert ready, f"{count} lines not written within {timeout}s; got {data!r}"
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, f"the pipe closed after {data!r}"
        data += chunk
    return data.splitlines()[:count]


@pytest.mark.parametrize("store", [False, True], ids=["no-store", "sqlite"])
def test_a_stalled_stdin_holds_back_neither_what_it_sent_nor_ctrl_c(tmp_path: Path, store: bool) -> None:
    """`producer | domainscan scan --file -`, the producer sending two lines and then nothing (yet):
    both are recorded at once, not after 8 KiB, a full chunk or the end of the input, and Ctrl-C still
    stops the run promptly (it used to wait for the next line), with the batch marked interrupted."""
    db = tmp_path / "stdin.db"
    args = [DOMAINSCAN, "scan", "--file", "-", "--format", "jsonl", "--concurrency", "50"]
    args += ["--database-url", f"sqlite:///{db}"] if store else ["--no-store"]
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(args, env=env, **pipes) as proc:  # type: ignore[call-overload]
        try:
            proc.stdin.write(b"not a domain!\nnor_this\n")
            proc.stdin.flush()
            lines = read_lines(proc.stdout, 2, timeout=15)
            assert [json.loads(line)["input"] for line in lines] == ["not a domain!", "nor_this"]
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=PROCESS_TIMEOUT)
            took = time.monotonic() - sent
        finally:
            proc.kill()
        stderr = proc.stderr.read().decode()
    assert code == 130, stderr
    assert took < PROMPT, f"exited {took:.1f}s after Ctrl-C"
    if store:
        assert sqlite_rows(db, "select status, total, invalid from batches") == [("interrupted", 2, 2)]


def test_kill_9_leaves_running_jobs_and_resume_takes_them_back_once_stale(
    farm: Farm, request: pytest.FixtureRequest, tmp_path: Path, tenant: str
) -> None:
    """kill -9 on SQLite and on PostgreSQL, and two Ctrl-C in a row, all at once (the wait for the
    batches to look stale is the same). The resume comes as soon as `batches show` says stale, while
    the dead process's leases still run: it must wait them out and scan those jobs too, not call the
    batch complete with jobs left running."""
    crashes = [
        Crash("kill -9, sqlite", "sqlite"),
        Crash("kill -9, postgresql", "postgresql"),
        Crash("Ctrl-C twice, sqlite", "sqlite", twice=True),
    ]
    for n, case in enumerate(crashes):
        (tmp_path / f"case{n}").mkdir()
        case.urls = database(case.backend, request, tmp_path / f"case{n}")
    for n, case in enumerate(crashes):  # started together, so that each is under way when it is stopped
        args = scan_args(farm, tenant, case.urls[1], "--timeout", str(KILL_TIMEOUT), "--parse-workers", "1")
        case.first = start(farm, tmp_path / f"case{n}", "first", *args)
    for case in crashes:
        assert case.first is not None
        case.batch = under_way(farm, case.first, case.urls[0], tenant)
    for case in crashes:
        assert case.first is not None
        crash(case.first, twice=case.twice)

    for case in crashes:
        url, batch = case.urls[0], case.batch
        assert_counters_agree(url, tenant, batch)
        before = job_states(url, tenant)
        (shown,) = read_json(url, tenant, "batches", "show", str(batch))
        if case.twice and shown["status"] == "interrupted":
            continue  # the first Ctrl-C had tidied up already: nothing left to wait for
        assert (shown["status"], shown["stale"]) == ("running", False), case.name  # a fresh heartbeat
        if not case.twice:
            left = read_json(url, tenant, "jobs", "list", "--batch", str(batch), "--status", "running")
            assert {job["domain"] for job in left} & farm.slow  # the fetches it died in are still running
            assert "cancelled" not in {status for _, _, status in before}
        refused = run_domainscan(None, *resume_args(batch, tenant, url))  # it stops before any fetch
        assert refused.returncode == 2, case.name  # a usage error: the database is fine
        assert refused.stdout == ""
        (message,) = refused.stderr.splitlines()
        assert re.fullmatch(
            rf"domainscan: batch {batch} is still running \(heartbeat \d+s ago\); "
            "wait for it or stop it first",
            message,
        ), message
        assert job_states(url, tenant) == before  # refusing changed nothing

    def resumable(case: Crash) -> dict[str, Any] | None:
        (shown,) = read_json(case.urls[0], tenant, "batches", "show", str(case.batch))
        return shown if shown["stale"] or shown["status"] == "interrupted" else None

    seconds = {}
    for n, case in enumerate(crashes):
        shown = wait_for(
            partial(resumable, case),
            timeout=STALE_AFTER + 30,
            what=f"batch {case.batch} ({case.name}) to be reported stale",
            interval=0.5,
        )
        if shown["status"] == "running":
            heartbeat = datetime.fromisoformat(shown["heartbeat_at"].replace("Z", "+00:00"))
            assert (datetime.now(UTC) - heartbeat).total_seconds() > STALE_AFTER
        seconds[n] = start(
            farm, tmp_path / f"case{n}", "second", *resume_args(case.batch, tenant, case.urls[1])
        )

    for n, case in enumerate(crashes):
        second = seconds[n]
        code = second.wait()
        resumed = second.records()
        assert code == (1 if any(r["status"] == "error" for r in resumed) else 0), second.stderr()
        assert case.first is not None
        assert_finished_once(case.urls[0], tenant, case.batch, farm, [case.first.records(), resumed])


# --- PgBouncer pauses, drops its connections, or stays away ---------------------------------------------

PAUSE_SECONDS = 3.0
SPOOLED = re.compile(
    r"(\d+) results could not be stored; they are in (\S+) "
    r"\(load them with: domainscan import (\S+) --tenant (\S+)\)"
)
# `domainscan` whose storage gives up after one second instead of thirty, so that an outage of a few
# seconds outlasts the retries and the spool is used for certain.
IMPATIENT_DOMAINSCAN = [
    sys.executable,
    "-c",
    "import sys, domainscan.db.repository as repository; repository.RETRY_BUDGET = 1.0; "
    "from domainscan.cli import run; sys.argv[0] = 'domainscan'; run()",
]

# ...and registering its inputs slowly (a chunk of SLOW_SITES every half second), as a long input would.
SLOWLY_REGISTERING_DOMAINSCAN = [
    sys.executable,
    "-c",
    "import asyncio, sys, domainscan.db.repository as repository, domainscan.pipeline as pipeline\n"
    f"repository.RETRY_BUDGET = 1.0; pipeline.REGISTER_CHUNK = {SLOW_SITES}\n"
    "add_jobs = repository.Repository.add_jobs\n"
    "async def slowly(self, *args, **kwargs):\n"
    "    await asyncio.sleep(0.5)\n"
    "    return await add_jobs(self, *args, **kwargs)\n"
    "repository.Repository.add_jobs = slowly\n"
    "from domainscan.cli import run; sys.argv[0] = 'domainscan'; run()",
]


def pgbouncer(*commands: str) -> None:
    """Run commands on PgBouncer's admin console."""
    with psycopg.connect(f"{PGBOUNCER}/pgbouncer", autocommit=True) as console:
        for command in commands:
            console.execute(command)


def pgbouncer_resume(name: str) -> None:
    """RESUME and ENABLE the database, whatever state a test left it in."""
    for command in (f"RESUME {name}", f"ENABLE {name}"):
        try:
            pgbouncer(command)
        except psycopg.Error as exc:
            if "is not paused" not in str(exc):
                raise


def waiting_clients(name: str) -> int:
    """How many client connections to the database wait in PgBouncer (paused) for a server."""
    with psycopg.connect(f"{PGBOUNCER}/pgbouncer", autocommit=True) as console:
        cursor = console.execute("SHOW CLIENTS")
        columns = [column.name for column in cursor.description or []]
        clients = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return sum(c["database"] == name and c["state"] == "waiting" for c in clients)


def blocked_writes(name: str) -> int:
    """How many of domainscan's server connections to the database wait on a lock."""
    ((n,),) = db_rows(
        f"{POSTGRES}/postgres",
        "select count(*) from pg_stat_activity where datname = :db and application_name = 'domainscan' "
        "and wait_event_type = 'Lock'",
        db=name,
    )
    return int(n)


def terminal_jobs(url: str, tenant: str, batch: int) -> dict[str, str]:
    return {d: s for b, d, s in job_states(url, tenant) if b == batch and s in TERMINAL}


def stored_rows(url: str, tenant: str) -> list[tuple[Any, ...]]:
    """Everything a load could change: the tenant's jobs, domains and batches, as text."""
    return [
        *db_rows(
            url,
            "select id, status, error_kind, finished_at, result::text from jobs "
            "where tenant = :t order by id",
            t=tenant,
        ),
        *db_rows(
            url,
            "select domain, scans, last_scanned_at, record::text from domains "
            "where tenant = :t order by domain",
            t=tenant,
        ),
        *db_rows(
            url, "select id, status, total, ok, failed, invalid from batches where tenant = :t", t=tenant
        ),
    ]


def assert_nothing_missing(
    scan: Scan, code: int, look: str, tenant: str, batch: int, farm: Farm
) -> Path | None:
    """Every input is in the database or in the spool the run printed; returns the spool if any.

    Exit 3 comes with a spool; otherwise the exit code says the domains' outcomes and the batch is done.
    The output is complete either way.
    """
    printed = scan.records()
    assert Counter(r["input"] for r in printed) == Counter(farm.domains)
    assert {r["domain"]: r["status"] for r in printed} == farm.expected
    spooled = SPOOLED.search(scan.stderr())
    if code != 3:
        assert code == 1, scan.stderr()  # the farm has broken sites
        assert spooled is None
        assert_finished_once(look, tenant, batch, farm, [printed])
        return None
    assert spooled is not None, scan.stderr()
    count, path, again, owner = spooled.groups()
    assert (again, owner) == (path, tenant)
    spool = Path(path)
    lines = records(spool.read_text())
    assert len(lines) == int(count) > 0
    assert all(r in printed for r in lines)  # the very records the user saw
    stored = terminal_jobs(look, tenant, batch)
    assert {r["domain"] for r in lines}.isdisjoint(stored)
    assert set(stored) | {r["domain"] for r in lines} == set(farm.domains)
    return spool


def assert_import_completes(spool: Path, url: str, look: str, tenant: str, batch: int, farm: Farm) -> None:
    """Loading the spool stores every remaining outcome, once; loading it again changes nothing."""
    loaded = run_domainscan(None, "import", str(spool), "--tenant", tenant, "--database-url", url)
    assert loaded.returncode == 0, loaded.stderr
    want = {d: "succeeded" if s == "ok" else "failed" for d, s in farm.expected.items()}
    assert terminal_jobs(look, tenant, batch) == want
    scans = dict(db_rows(look, "select domain, scans from domains where tenant = :t", t=tenant))
    assert scans == dict.fromkeys(want, 1)
    before = stored_rows(look, tenant)
    again = run_domainscan(None, "import", str(spool), "--tenant", tenant, "--database-url", url)
    assert again.returncode == 0, again.stderr
    assert stored_rows(look, tenant) == before


@pytest.mark.webfarm
@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["pause", "kill", "terminate"])
def test_pgbouncer_pausing_or_dropping_connections_loses_nothing(
    fault: str, farm: Farm, pgbouncer_server: Any, tmp_path: Path, tenant: str
) -> None:
    """PAUSE then RESUME; KILL (then RESUME) while an operation waits in the pooler; a server connection
    terminated by PostgreSQL in the middle of a write. The retries ride it out (or, past their budget,
    the spool takes the results): nothing is missing, nothing is stored twice."""
    url, farm_url = shared_database(pgbouncer_server)
    look, name = direct(url), url.rsplit("/", 1)[1]
    scan = start(farm, tmp_path, "scan", *scan_args(farm, tenant, farm_url))
    batch = under_way(farm, scan, look, tenant)
    try:
        if fault == "pause":
            paused = time.monotonic()
            pgbouncer(f"PAUSE {name}")  # returns once the transactions under way are done
            stalled = terminal_jobs(look, tenant, batch)
            wait_for(lambda: waiting_clients(name), timeout=10, what="the scan to wait on the paused pooler")
            time.sleep(max(0.0, paused + PAUSE_SECONDS - time.monotonic()))  # a pause of this length
            assert scan.proc.poll() is None  # waiting, not failing
            assert terminal_jobs(look, tenant, batch) == stalled  # nothing got through
            pgbouncer(f"RESUME {name}")
        elif fault == "kill":  # while an operation of the scan waits in the pooler, so that it is cut
            pgbouncer(f"PAUSE {name}")
            wait_for(lambda: waiting_clients(name), timeout=10, what="the scan to wait on the paused pooler")
            pgbouncer(f"KILL {name}", f"RESUME {name}")
        else:  # terminated by PostgreSQL in the middle of a write, held there by a lock
            with psycopg.connect(f"{POSTGRES}/{name}") as locker:
                locker.execute("LOCK TABLE batches IN EXCLUSIVE MODE")  # writes wait, reads go on
                wait_for(lambda: blocked_writes(name), timeout=10, what="a write of the scan to wait")
                (terminated,) = locker.execute(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = %s "
                    "and application_name = 'domainscan' and wait_event_type = 'Lock'",
                    (name,),
                ).fetchone() or (0,)
                assert terminated > 0
                time.sleep(0.5)  # the retry waits on the lock too, until it goes
    finally:
        pgbouncer_resume(name)
    code = scan.wait()
    if fault == "terminate":  # the cut write was retried, and the user was told, in the tool's voice
        assert re.search(r"^domainscan: warning: .*; trying again in ", scan.stderr(), re.MULTILINE)
    if (spool := assert_nothing_missing(scan, code, look, tenant, batch, farm)) is not None:
        assert_import_completes(spool, url, look, tenant, batch, farm)


@pytest.mark.webfarm
@pytest.mark.postgres
def test_an_outage_longer_than_the_retries_goes_to_the_spool(
    farm: Farm, pgbouncer_server: Any, tmp_path: Path, tenant: str
) -> None:
    """PgBouncer refuses the database (DISABLE, KILL) until a write has outlasted its retries: the
    results of that time go to the spool (exit 3, path printed), the ones after it to the database
    again, and `domainscan import` loads the spool, once."""
    url, farm_url = shared_database(pgbouncer_server)
    look, name = direct(url), url.rsplit("/", 1)[1]
    scan = start(farm, tmp_path, "scan", *scan_args(farm, tenant, farm_url), program=IMPATIENT_DOMAINSCAN)
    batch = under_way(farm, scan, look, tenant)
    spools = tmp_path / "data" / "domainscan" / "spool"
    try:
        pgbouncer(f"DISABLE {name}", f"KILL {name}")
        # Until a write has failed for good (the workers may all be on slow pages for a while).
        wait_for(lambda: spools.is_dir() and any(spools.iterdir()), timeout=30, what="a spool file")
        assert scan.proc.poll() is None
    finally:
        pgbouncer_resume(name)  # RESUME before ENABLE: no client waits on a killed database
    back = terminal_jobs(look, tenant, batch)
    code = scan.wait()
    assert code == 3, scan.stderr()
    spool = assert_nothing_missing(scan, code, look, tenant, batch, farm)
    assert spool is not None
    assert len(terminal_jobs(look, tenant, batch)) > len(back)  # the database was used again after
    assert_import_completes(spool, url, look, tenant, batch, farm)


@pytest.mark.webfarm
@pytest.mark.postgres
def test_inputs_the_database_would_not_register_are_scanned_printed_and_spooled(
    farm: Farm, pgbouncer_server: Any, tmp_path: Path, tenant: str
) -> None:
    """The outage comes while the inputs are still being registered: the batch goes on, the inputs
    that got no job are scanned all the same, printed, and spooled with the batch id, and `domainscan
    import` gives them their jobs: every domain of the farm ends in the batch once."""
    url, farm_url = shared_database(pgbouncer_server)
    look, name = direct(url), url.rsplit("/", 1)[1]
    scan = start(
        farm, tmp_path, "scan", *scan_args(farm, tenant, farm_url), program=SLOWLY_REGISTERING_DOMAINSCAN
    )
    batch = under_way(farm, scan, look, tenant)
    registered = len(job_states(look, tenant))
    assert registered < SITES  # the outage will come in the middle of the registration
    gave_up = "the remaining inputs are scanned and spooled"
    try:
        pgbouncer(f"DISABLE {name}", f"KILL {name}")
        wait_for(lambda: gave_up in scan.stderr(), timeout=30, what="the registration to give up")
    finally:
        pgbouncer_resume(name)
    code = scan.wait()
    assert code == 3, scan.stderr()
    assert scan.stderr().splitlines()[-1] == (
        f"domainscan: after the import, finish the batch with: "
        f"{RESUMED.format(batch=batch, tenant=tenant)} --database-url URL"
    )
    spool = assert_nothing_missing(scan, code, look, tenant, batch, farm)
    assert spool is not None
    unregistered = [r for r in records(spool.read_text()) if r["job_id"] is None]
    assert unregistered
    assert all(r["batch_id"] == batch for r in unregistered)
    assert len(job_states(look, tenant)) < SITES
    # The database was back for the run's last word: no process runs the batch any more.
    assert db_rows(look, "select status from batches where id = :b", b=batch) == [("interrupted",)]
    assert_import_completes(spool, url, look, tenant, batch, farm)
    assert len(job_states(look, tenant)) == SITES
    resumed = run_domainscan(None, "scan", "--resume", str(batch), "--tenant", tenant, "--database-url", url)
    assert resumed.returncode == 0, resumed.stderr  # at once: no waiting for a heartbeat to go stale
    assert db_rows(look, "select status from batches where id = :b", b=batch) == [("complete",)]


# --- the database down at the start --------------------------------------------------------------------


def test_a_database_that_never_answers_stops_the_run_within_the_connect_timeout() -> None:
    """A server that accepts the connection and then says nothing (test_e2e has the refused one): exit 3
    within the URL's connect_timeout, one line naming the host, never the password, nothing scanned."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever answers
        port = silent.getsockname()[1]
        url = f"postgresql://scanner:hunter2@127.0.0.1:{port}/scans?connect_timeout=2"
        started = time.monotonic()
        proc = run_domainscan(
            None, "scan", "example.com", "--database-url", url, "--format", "jsonl", timeout=60
        )
        took = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert took < 2 + 4, f"{took:.1f}s"  # the timeout, and the start of the program
    (line,) = proc.stderr.splitlines()
    assert line.startswith("domainscan: ")
    assert f"127.0.0.1:{port}" in line
    assert "hunter2" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
