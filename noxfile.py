"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s typecheck` (all three: `nox`)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against the installed package (not the source tree), so packaging is tested too."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(".", "mypy>=1.10", "lxml-stubs>=0.5", "pytest", "nox")
    session.run("mypy")
