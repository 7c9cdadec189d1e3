"""The engine factory: one AsyncEngine per database URL, configured for how domainscan uses it.

PostgreSQL may sit behind PgBouncer or Supavisor in transaction mode, where consecutive transactions of
one client connection can run on different server connections. So: no server-side prepared statements
(``prepare_threshold=None``; SQLAlchemy's ``execution_options(prepared=False)`` does nothing) and no
session state. Under those rules a small client pool (``pool_size``, a batch's default 3) is as safe
behind a pooler as on a direct connection, and it saves a connection setup per operation: a new
PostgreSQL backend each time had been half of the server's CPU for a 2000-domain batch (0.5 of 1.0 s on
the bench farm). Pooled connections are pinged before use, so one the server or the pooler dropped is
replaced rather than failing an operation. ``pool_size=0`` (NullPool) opens one per operation, which
one-shot commands use.

SQLite may be written by several domainscan processes at once: WAL lets readers run beside the one
writer, ``busy_timeout`` makes a writer wait for the lock instead of failing, and write transactions start
with ``BEGIN IMMEDIATE`` so they take the lock up front (a deferred transaction that reads first and writes
later can fail with "database is locked" without waiting at all). The journal mode belongs to the file,
so it is switched once, when the engine is made, before any pooled connection exists: switching from a
pooled connection races the other connections of a new file, and a switch that loses that race silently
leaves the file in rollback mode, where a writer and a connecting reader can block each other for the
whole busy timeout.
"""

from __future__ import annotations

import math
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool

from domainscan.db.urls import SQLITE_DRIVER, display, to_async_url
from domainscan.errors import StorageError
from domainscan.jsontext import dumps

APPLICATION_NAME = "domainscan"
# psycopg's prepare_threshold: None never prepares server-side, which transaction poolers require.
# A module constant rather than an option, so that the pooler test's negative control can set 0 and
# show that the test catches the fault; no user should ever want another value.
PREPARE_THRESHOLD: int | None = None
SQLITE_BUSY_TIMEOUT_MS = 30_000
_READ_ONLY = "domainscan_read_only"  # execution option: a transaction that never writes


def create_engine(url: str, *, pool_size: int = 0, connect_timeout: float = 10) -> AsyncEngine:
    """An AsyncEngine for a user's database URL (see :mod:`domainscan.db.urls`); connects lazily.

    ``pool_size`` and ``connect_timeout`` apply to PostgreSQL (libpq counts the timeout in whole
    seconds, at least 2); a ``connect_timeout`` or ``application_name`` in the URL query wins.
    """
    target = to_async_url(url)
    if target.drivername == SQLITE_DRIVER:
        return _sqlite_engine(target)
    return _postgres_engine(target, pool_size=pool_size, connect_timeout=connect_timeout)


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (and pool) for transactions that only read: on SQLite they begin DEFERRED."""
    return engine.execution_options(**{_READ_ONLY: True})


def _postgres_engine(target: URL, *, pool_size: int, connect_timeout: float) -> AsyncEngine:
    connect_args: dict[str, Any] = {"prepare_threshold": PREPARE_THRESHOLD}
    if "application_name" not in target.query:
        connect_args["application_name"] = APPLICATION_NAME
    if "connect_timeout" not in target.query:
        connect_args["connect_timeout"] = max(1, math.ceil(connect_timeout))
    if pool_size > 0:
        return create_async_engine(
            target,
            json_serializer=dumps,
            connect_args=connect_args,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=True,
        )
    return create_async_engine(target, json_serializer=dumps, connect_args=connect_args, poolclass=NullPool)


def _sqlite_engine(target: URL) -> AsyncEngine:
    path = Path(str(target.database))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"storage unavailable: cannot create the directory of {display(target)} ({exc.strerror})"
        ) from exc
    _ensure_wal(path, target)
    engine = create_async_engine(target, json_serializer=dumps)
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


def _ensure_wal(path: Path, target: URL) -> None:
    """Put the file in WAL mode (creating it if new); a no-op, without locks, when it already is."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    try:
        with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)) as conn:
            # Another process switching at the same moment makes the pragma answer the old mode.
            while conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                if time.monotonic() > deadline:
                    raise StorageError(f"storage unavailable: cannot put {display(target)} in WAL mode")
                time.sleep(0.05)
    except sqlite3.Error as exc:
        raise StorageError(f"storage unavailable: cannot open {display(target)} ({exc})") from exc


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver (see _on_sqlite_begin), then set up the connection.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    read = connection.get_execution_options().get(_READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")
