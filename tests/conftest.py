"""Shared fixtures.

Databases
---------
A test that takes ``database_server`` or ``database_url`` runs once per backend in ``BACKENDS``:

* ``sqlite``: files in a session temporary directory;
* ``postgresql``: databases created on the PostgreSQL server at ``$DOMAINSCAN_TEST_POSTGRES`` (default
  ``postgresql://postgres@127.0.0.1:5432``), named ``domainscan_test_<pid>_<random>`` and dropped at the
  end of the session;
* ``pgbouncer``: the same kind of databases, still created and dropped directly on PostgreSQL, but used
  through the pooler at ``$DOMAINSCAN_TEST_PGBOUNCER`` (default ``postgresql://postgres@127.0.0.1:6432``,
  PgBouncer in transaction mode, see ``.ci/pgbouncer.ini``; its ``*`` entry passes any database name
  through).

Both PostgreSQL backends are marked ``postgres``: skipped with the reason when the server (or the
pooler) is unreachable, or an error when ``CI=true``, where they are required.

Inside ``webfarm run`` only the namespace's own loopback exists, so a domainscan process there reaches
PostgreSQL and PgBouncer through their Unix sockets in ``$DOMAINSCAN_TEST_PG_SOCKETS`` (default
``/var/run/postgresql``): ``DatabaseServer.namespace_url(url)`` gives that form of a database's URL.

``tenant`` gives each test its own tenant, so tests can share one database per backend.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql

POSTGRES = os.environ.get("DOMAINSCAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
PGBOUNCER = os.environ.get("DOMAINSCAN_TEST_PGBOUNCER", "postgresql://postgres@127.0.0.1:6432").rstrip("/")
SOCKET_DIR = os.environ.get("DOMAINSCAN_TEST_PG_SOCKETS", "/var/run/postgresql")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("pgbouncer", id="pgbouncer", marks=pytest.mark.postgres),
]


class DatabaseServer(Protocol):
    """Somewhere to create empty databases for a test session."""

    name: str

    def new_url(self) -> str:
        """The URL (as a user would write it) of a new, empty database."""
        ...

    def namespace_url(self, url: str) -> str:
        """The same database's URL as seen from inside ``webfarm run`` (no TCP to the host there)."""
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

    def namespace_url(self, url: str) -> str:
        return url  # a file is a file in the farm's namespace too

    def close(self) -> None:
        """The files go with the session's temporary directory."""


class PostgresServer:
    """Creates databases through ``admin_url``; hands out URLs on ``client_url`` (the same server, or a
    pooler in front of it) and, for processes inside the webfarm, on the client's Unix socket."""

    def __init__(self, name: str, *, admin_url: str, client_url: str, socket_dir: str = SOCKET_DIR) -> None:
        self.name = name
        self._admin_url = admin_url
        self._client_url = client_url
        self._socket_dir = socket_dir
        self._created: list[str] = []

    def unavailable(self) -> str | None:
        """Why the server (or the pooler in front of it) cannot be used, or None when both answer."""
        for what, url in (("PostgreSQL", self._admin_url), (self.name, self._client_url)):
            try:
                with psycopg.connect(f"{url}/postgres", connect_timeout=3):
                    pass
            except psycopg.Error as exc:
                return f"{what} at {url} is unreachable: {str(exc).strip().splitlines()[0]}"
        return None

    def socket_unavailable(self) -> str | None:
        """Why ``namespace_url`` URLs cannot connect (say, a remote server has no local socket)."""
        try:
            with psycopg.connect(self.namespace_url(f"{self._client_url}/postgres"), connect_timeout=3):
                return None
        except psycopg.Error as exc:
            return f"{self.name} has no Unix socket in {self._socket_dir}: {str(exc).strip().splitlines()[0]}"

    def new_url(self) -> str:
        name = f"domainscan_test_{os.getpid()}_{secrets.token_hex(4)}"
        with psycopg.connect(f"{self._admin_url}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._created.append(name)
        return f"{self._client_url}/{name}"

    def namespace_url(self, url: str) -> str:
        """``postgresql://USER@/DB?host=SOCKET_DIR[&port=PORT]``: libpq's form for a Unix socket."""
        parts = urlsplit(url)
        port = f"&port={parts.port}" if parts.port not in (None, 5432) else ""
        return (
            f"postgresql://{parts.username or 'postgres'}@{parts.path}?host={quote(self._socket_dir)}{port}"
        )

    def close(self) -> None:
        # FORCE also ends the server connections a pooler still keeps to the database.
        with psycopg.connect(f"{self._admin_url}/postgres", autocommit=True) as conn:
            for name in self._created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._created.clear()


def _make_server(name: str, tmp_path_factory: pytest.TempPathFactory) -> DatabaseServer:
    if name == "sqlite":
        return SQLiteFiles(tmp_path_factory.mktemp("sqlite"))
    if name in ("postgresql", "pgbouncer"):
        client = POSTGRES if name == "postgresql" else PGBOUNCER
        server = PostgresServer(name, admin_url=POSTGRES, client_url=client)
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
def pgbouncer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServer]:
    """The PgBouncer backend alone, for the tests that are about the pooler."""
    server = _make_server("pgbouncer", tmp_path_factory)
    yield server
    server.close()


@pytest.fixture(scope="session")
def database_url(database_server: DatabaseServer) -> str:
    """One database per backend, shared by the session's tests (isolate them with ``tenant``).

    It starts empty; open it with ``open_repository(url, auto_upgrade=True)`` to get the schema.
    """
    return database_server.new_url()


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture
def tenant() -> str:
    """A tenant name of its own for this test."""
    return f"t-{secrets.token_hex(6)}"
