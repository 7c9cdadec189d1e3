"""`--help` and `--version` stay cheap: cron jobs and CI smoke checks pay the start-up on every run, so
they must not import the HTTP client, lxml, SQLAlchemy or an event loop (bench/run.py times them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from domainscan import __version__

HEAVY = ("httpx", "aiohttp", "uvloop", "asyncio", "lxml", "sqlalchemy", "psycopg", "alembic", "phonenumbers")

PROBE = """
import runpy, sys
sys.argv = ["domainscan", *sys.argv[1:]]
try:
    runpy.run_module("domainscan", run_name="__main__")
except SystemExit:
    pass
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def imported(*args: str) -> set[str]:
    """The top-level packages loaded by `domainscan ARGS`."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    return set(done.stderr.split())


@pytest.mark.parametrize("args", [["--help"], ["scan", "--help"], ["db", "--help"], ["--version", "--help"]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    loaded = imported(*args)
    assert "typer" in loaded, "the probe runs the real command"
    assert loaded & set(HEAVY) == set()


def test_version_alone_is_answered_before_the_command_line_framework_is_imported() -> None:
    assert imported("--version") & {*HEAVY, "typer", "rich", "click"} == set()
    command = [sys.executable, "-m", "domainscan", "--version"]
    fast = subprocess.run(command, check=False, capture_output=True, text=True)
    # The same line as the CLI's own --version (reached here with a subcommand after it).
    full = subprocess.run([*command, "scan"], check=False, capture_output=True, text=True)
    assert (fast.returncode, fast.stdout) == (0, f"domainscan {__version__}\n")
    assert (full.returncode, full.stdout) == (fast.returncode, fast.stdout)


def test_the_probe_sees_what_a_command_imports() -> None:
    """The negative control: a command that does work loads the heavy packages, and the probe says so."""
    assert {"sqlalchemy", "asyncio"} <= imported("domains", "list", "--database-url", "sqlite:///:memory:")
