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
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEBFARM = Path(os.environ.get("DOMAINSCAN_WEBFARM", ROOT.parent / "shared" / "webfarm"))
# The console script installed beside this interpreter: the command a user runs.
DOMAINSCAN = str(Path(sys.executable).parent / "domainscan")


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
    subprocess.run(
        [str(WEBFARM / "webfarm"), "build", str(out), "--sites", str(sites), *extra],
        check=True,
        capture_output=True,
    )
    return out


def run_domainscan(
    farm: Path | None,
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run `domainscan ARGS` (inside the farm when given) and capture its output as text."""
    cmd = [DOMAINSCAN, *args]
    if farm is not None:
        cmd = [str(WEBFARM / "webfarm"), "run", str(farm), "--", *cmd]
    full_env = {
        **os.environ,
        "PATH": f"{Path(DOMAINSCAN).parent}:/usr/sbin:/sbin:{os.environ.get('PATH', '')}",
    }
    full_env.update(env or {})
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, env=full_env, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


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
