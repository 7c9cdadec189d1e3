"""The one place where SQLAlchemy and driver errors become :class:`domainscan.errors.StorageError`.

Every repository operation and migration step runs inside :func:`wrap_db_errors`, so callers above
``domainscan.db`` only ever see StorageError/SchemaError, each with a one-line message that names the
database (``postgresql://user@host:port/db``) but never its password.

It also tells the faults that pass from the ones that don't (:func:`is_transient`): a dropped or refused
connection, a restarting server or pooler, a lock that outlasted SQLite's busy timeout, a deadlock or a
serialization failure are raised as :class:`TransientStorageError`, which the repository retries in a
fresh connection; a constraint violation, a schema or syntax error or a refused login are not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from domainscan.db.urls import display
from domainscan.errors import StorageError

_MAX_REASON = 200

# SQLSTATEs worth another try: connection exceptions (08: PgBouncer reports its own faults, such as
# query_wait_timeout or "pgbouncer cannot connect to server", as 08P01), serialization failure and
# deadlock, too many connections, and a server shutting down, crashed or starting up.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03", "57P05"})
_TRANSIENT_SQLSTATE_CLASSES = ("08",)
# SQLite's SQLITE_BUSY and SQLITE_LOCKED (the primary code is the low byte of an extended one).
_SQLITE_BUSY_CODES = frozenset({5, 6})
# What the drivers and PgBouncer say when there is no SQLSTATE to go by (lower case, substrings).
_TRANSIENT_MESSAGES = (
    "connection refused",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "server closed the connection",
    "connection is closed",
    "connection is lost",
    "connection already closed",
    "terminating connection",
    "consuming input failed",
    "could not receive data",
    "could not send data",
    "broken pipe",
    "ssl syscall error",
    "eof detected",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "query_wait_timeout",
    "pgbouncer cannot connect to server",
    "server conn crashed",
    "server_login_retry",
    '" is disabled',  # PgBouncer's DISABLE (maintenance): 'database "x" is disabled', no SQLSTATE
    "database is locked",
    "database table is locked",
    "database is busy",
    "deadlock detected",
    "could not serialize access",
)
# Checked first: a login or a database that is wrong stays wrong however often it is tried, even when
# PgBouncer wraps it in a 08P01.
_PERMANENT_MESSAGES = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "no such database",
    "no such user",
    "does not exist",
    "permission denied",
    "authentication failed",
)
_PERMANENT_SQLSTATE_CLASSES = ("22", "23", "28", "3D", "42")


class TransientStorageError(StorageError):
    """A storage fault that may pass (see :func:`is_transient`); the repository retries these."""


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same operation again, in a new connection, may succeed.

    ``exc`` is a SQLAlchemy DBAPIError or the driver's own exception (psycopg, sqlite3).
    """
    invalidated = False
    if isinstance(exc, DBAPIError):
        invalidated = exc.connection_invalidated
        exc = exc.orig or exc
    message = str(exc).lower()
    if any(text in message for text in _PERMANENT_MESSAGES):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES):
            return True
        if sqlstate.startswith(_PERMANENT_SQLSTATE_CLASSES):
            return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_BUSY_CODES:
        return True
    return invalidated or any(text in message for text in _TRANSIENT_MESSAGES)


@contextmanager
def wrap_db_errors(url: URL) -> Iterator[None]:
    """Translate errors raised inside the block into StorageError naming ``url`` (redacted)."""
    try:
        yield
    except DBAPIError as exc:
        where, reason = display(url), _reason(exc.orig or exc, url)
        error = TransientStorageError if is_transient(exc) else StorageError
        if exc.statement is None:  # raised while connecting (or committing): no statement to blame
            raise error(f"storage unavailable: cannot connect to {where} ({reason})") from exc
        if exc.connection_invalidated:
            raise error(f"storage unavailable: lost the connection to {where} ({reason})") from exc
        raise error(f"storage error on {where}: {reason}") from exc
    except SQLAlchemyError as exc:  # e.g. the pool's checkout timed out
        raise StorageError(f"storage error on {display(url)}: {_reason(exc, url)}") from exc


def _reason(exc: BaseException, url: URL) -> str:
    """The driver's own words, shortened to one line, with the password scrubbed just in case.

    psycopg says ``connection failed: connection to server at "127.0.0.1", port 1 failed: Connection
    refused`` followed by a hint line; keep only what comes after the last ``failed:``.
    """
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = text.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()
    if url.password:
        text = text.replace(str(url.password), "***")
    text = text[:1].lower() + text[1:]
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
