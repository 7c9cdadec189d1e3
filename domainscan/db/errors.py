"""The one place where SQLAlchemy and driver errors become :class:`domainscan.errors.StorageError`.

Every repository operation and migration step runs inside :func:`wrap_db_errors`, so callers above
``domainscan.db`` only ever see StorageError/SchemaError, each with a one-line message that names the
database (``postgresql://user@host:port/db``) but never its password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from domainscan.db.urls import display
from domainscan.errors import StorageError

_MAX_REASON = 200


@contextmanager
def wrap_db_errors(url: URL) -> Iterator[None]:
    """Translate errors raised inside the block into StorageError naming ``url`` (redacted)."""
    try:
        yield
    except DBAPIError as exc:
        where, reason = display(url), _reason(exc.orig or exc, url)
        if exc.statement is None:  # raised while connecting: no statement was sent yet
            raise StorageError(f"storage unavailable: cannot connect to {where} ({reason})") from exc
        if exc.connection_invalidated:
            raise StorageError(f"storage unavailable: lost the connection to {where} ({reason})") from exc
        raise StorageError(f"storage error on {where}: {reason}") from exc
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
