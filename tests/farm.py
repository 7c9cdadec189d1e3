"""Helpers for end-to-end tests: run the installed `domainscan` command inside ../shared/webfarm.

The webfarm serves synthetic sites with known answers by Host header, in a private network namespace
(root and nginx needed). Where that is impossible the tests skip and say why, except under CI=true,
where a missing service is a failure, never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
WEBFARM = Path(os.environ.get("DOMAINSCAN_WEBFARM", ROOT.parent / "shared" / "webfarm"))
# The console script installed beside this interpreter: the command a user runs.
DOMAINSCAN = str(Path(sys.executable).parent / "domainscan")
# The farm's sites live on loopback, which domainscan refuses to fetch from unless told.
FARM_NET = ["--allow-net", "127.0.0.0/8"]


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI the same condition fails the test instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def webfarm_missing() -> str | None:
    if not (WEBFARM / "webfarm").exists():
        return f"webfarm not found at {WEBFARM}"
    if os.geteuid() != 0:
        return "the webfarm needs root (network namespaces)"
    for tool in ("nginx", "unshare", "ip"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install nginx-light iproute2 util-linux)"
    return None


def build_farm(out: Path, sites: int, *extra: str) -> Path:
    """A webfarm of `sites` sites built in `out`; the test is skipped (failed under CI) where the webfarm
    cannot run."""
    if (reason := webfarm_missing()) is not None:
        unavailable(reason)
    subprocess.run(
        [str(WEBFARM / "webfarm"), "build", str(out), "--sites", str(sites), *extra],
        check=True,
        capture_output=True,
    )
    return out


def run_in_farm(
    farm: Path | None,
    cmd: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run CMD (inside the farm's namespace when given) and capture its output as text."""
    if farm is not None:
        cmd = [str(WEBFARM / "webfarm"), "run", str(farm), "--", *cmd]
    full_env = {
        **os.environ,
        "PATH": f"{Path(DOMAINSCAN).parent}:/usr/sbin:/sbin:{os.environ.get('PATH', '')}",
    }
    full_env.update(env or {})
    proc = subprocess.run(
        list(cmd), input=stdin, capture_output=True, timeout=timeout, env=full_env, cwd=cwd, check=False
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def run_domainscan(
    farm: Path | None,
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    wrapper: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run `domainscan ARGS` (inside the farm when given; under `wrapper`, such as prlimit, when
    given) and capture its output as text."""
    return run_in_farm(farm, [*wrapper, DOMAINSCAN, *args], stdin=stdin, env=env, timeout=timeout)


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def score(farm: Path, results: Path, fields: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WEBFARM / "webfarm"), "score", str(farm), str(results), "--fields", fields, *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def sqlite_rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


# The message a scan ends with (exit 3) against a shared database that has no schema yet.
MISSING_SCHEMA = "database schema is missing; run: domainscan db upgrade --database-url"


def shared_database(server: Any) -> tuple[str, str]:
    """A new database on a ``conftest.DatabaseServer``, ready for scans (PostgreSQL: after `domainscan
    db upgrade`, as users are told to run; SQLite creates its schema itself).

    Returns its URL for commands run here and its URL for commands run inside ``webfarm run``.
    """
    url = server.new_url()
    if url.startswith("sqlite"):
        return url, server.namespace_url(url)
    if (reason := server.socket_unavailable()) is not None:
        unavailable(reason)
    farm_url = server.namespace_url(url)
    upgraded = run_domainscan(None, "db", "upgrade", "--database-url", farm_url)
    assert upgraded.returncode == 0, upgraded.stderr
    return url, farm_url


def db_rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of one SQL query (``:name`` parameters) on a SQLite or PostgreSQL database URL, read
    behind domainscan's back. JSON columns come back as text on SQLite: see :func:`as_json`."""
    connect_args: dict[str, Any] = {}
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        connect_args["prepare_threshold"] = None  # it may be reading through PgBouncer
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()


def as_json(value: Any) -> Any:
    """A JSON column's value as Python: SQLite hands back text, PostgreSQL (JSONB) the decoded value."""
    return json.loads(value) if isinstance(value, str) else value


def expected_records(farm: Path) -> dict[str, dict[str, Any]]:
    """The farm's expected.jsonl, by domain."""
    return {r["domain"]: r for r in map(json.loads, (farm / "expected.jsonl").read_text().splitlines())}
