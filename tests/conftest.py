"""Shared fixtures.

Databases
---------
A test that takes ``database_server`` or ``database_url`` runs once per backend in ``BACKENDS``:

* ``sqlite``: files in a session temporary directory;
* ``postgresql``: databases created on the PostgreSQL server at ``$DOMAINSCAN_TEST_POSTGRES`` (default
  ``postgresql://postgres@127.0.0.1:5432``), named ``domainscan_test_<pid>_<random>`` and dropped at the
  end of the session. Marked ``postgres``: skipped with the reason when the server is unreachable, or
  an error when ``CI=true``, where PostgreSQL is required.

To run the same tests through a pooler (PgBouncer in transaction mode, say), add a ``pytest.param`` to
``BACKENDS`` and a ``PostgresServer`` in ``_make_server`` whose ``client_url`` points at the pooler: the
databases are still created directly on the server (``admin_url``).

``tenant`` gives each test its own tenant, so tests can share one database per backend.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from psycopg import sql

POSTGRES = os.environ.get("DOMAINSCAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432").rstrip("/")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


class DatabaseServer(Protocol):
    """Somewhere to create empty databases for a test session."""

    name: str

    def new_url(self) -> str:
        """The URL (as a user would write it) of a new, empty database."""
        ...

    def close(self) -> None:
        """Remove every database this server created."""
        ...


class SQLiteFiles:
    def __init__(self, directory: Path) -> None:
        self.name = "sqlite"
        self._directory = directory
        self._count = 0

    def new_url(self) -> str:
        self._count += 1
        return f"sqlite:///{self._directory / f'db{self._count}.db'}"

    def close(self) -> None:
        """The files go with the session's temporary directory."""


class PostgresServer:
    """Creates databases through ``admin_url``; hands out URLs on ``client_url`` (the same server, or a
    pooler in front of it)."""

    def __init__(self, name: str, *, admin_url: str, client_url: str) -> None:
        self.name = name
        self._admin_url = admin_url
        self._client_url = client_url
        self._created: list[str] = []

    def unavailable(self) -> str | None:
        """Why the server cannot be used, or None when it answers."""
        try:
            with psycopg.connect(f"{self._admin_url}/postgres", connect_timeout=3):
                return None
        except psycopg.Error as exc:
            return f"PostgreSQL at {self._admin_url} is unreachable: {str(exc).strip().splitlines()[0]}"

    def new_url(self) -> str:
        name = f"domainscan_test_{os.getpid()}_{secrets.token_hex(4)}"
        with psycopg.connect(f"{self._admin_url}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._created.append(name)
        return f"{self._client_url}/{name}"

    def close(self) -> None:
        with psycopg.connect(f"{self._admin_url}/postgres", autocommit=True) as conn:
            for name in self._created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._created.clear()


def _make_server(name: str, tmp_path_factory: pytest.TempPathFactory) -> DatabaseServer:
    if name == "sqlite":
        return SQLiteFiles(tmp_path_factory.mktemp("sqlite"))
    if name == "postgresql":
        server = PostgresServer(name, admin_url=POSTGRES, client_url=POSTGRES)
        reason = server.unavailable()
        if reason is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{reason} (CI=true: the postgres tests must run)")
            pytest.skip(reason)
        return server
    raise ValueError(f"unknown database backend {name!r}")


@pytest.fixture(scope="session", params=BACKENDS)
def database_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DatabaseServer]:
    """A backend to create empty databases on (``new_url()``); they are removed after the session."""
    server = _make_server(request.param, tmp_path_factory)
    yield server
    server.close()


@pytest.fixture(scope="session")
def database_url(database_server: DatabaseServer) -> str:
    """One database per backend, shared by the session's tests (isolate them with ``tenant``).

    It starts empty; open it with ``open_repository(url, auto_upgrade=True)`` to get the schema.
    """
    return database_server.new_url()


@pytest.fixture
def tenant() -> str:
    """A tenant name of its own for this test."""
    return f"t-{secrets.token_hex(6)}"
