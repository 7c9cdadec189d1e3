"""Database URLs as users write them -> the async driver URL domainscan connects with, and back for display.

Users write ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``postgresql://user:pass@host/db`` or
``postgres://...``; the driver (aiosqlite, psycopg 3) is chosen here so nobody else has to know about it.
Every URL that reaches a message or a log line goes through :func:`redact` (or :func:`display`) first.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from domainscan.errors import StorageError

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+psycopg"

_SCHEMES = {
    "sqlite": SQLITE_DRIVER,
    SQLITE_DRIVER: SQLITE_DRIVER,
    "postgresql": POSTGRES_DRIVER,
    "postgres": POSTGRES_DRIVER,
    POSTGRES_DRIVER: POSTGRES_DRIVER,
}
# libpq also accepts passwords as query parameters (?password=...); they are secrets too.
_SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
_MASK = "***"
_MASK_MARKER = "REDACTEDSECRET"  # survives URL quoting, unlike "***"
# For strings SQLAlchemy cannot parse: hide whatever sits between "user:" and "@", and the value of
# libpq-style "password=..." keywords.
_USERINFO_SECRET = re.compile(r"(//[^/@:]*:)[^/@]*@")
_KEYWORD_SECRET = re.compile(r"((?:ssl)?password\s*=\s*)(?:'[^']*'|\S+)", re.IGNORECASE)


def redact(url: str | URL) -> str:
    """The URL with its password (in the user info or the query) replaced by ``***``; never raises."""
    if isinstance(url, str):
        try:
            parsed = make_url(url.strip())
        except ArgumentError:
            return _KEYWORD_SECRET.sub(rf"\g<1>{_MASK}", _USERINFO_SECRET.sub(rf"\g<1>{_MASK}@", url))
    else:
        parsed = url
    if _SECRET_QUERY_KEYS.intersection(k.lower() for k in parsed.query):
        query = {k: (_MASK_MARKER if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in parsed.query.items()}
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=True).replace(_MASK_MARKER, _MASK)


def display(url: URL) -> str:
    """How a driver URL is named in messages: redacted, with the driver dropped (``postgresql://...``)."""
    return redact(url.set(drivername=url.get_backend_name()))


def to_async_url(url: str) -> URL:
    """Parse a user's database URL and rewrite it to the async driver domainscan uses.

    Raises StorageError (with the URL redacted) for URLs that are not SQLite files or PostgreSQL.
    """
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise StorageError(
            "invalid database URL: use sqlite:///PATH or postgresql://USER@HOST/DB (key=value strings are "
            "not URLs)"
        ) from None
    driver = _SCHEMES.get(parsed.drivername)
    if driver is None:
        raise StorageError(
            f"unsupported database URL scheme {parsed.drivername!r} in {redact(parsed)}; "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    if driver == SQLITE_DRIVER and parsed.database in (None, "", ":memory:"):
        raise StorageError(
            "in-memory SQLite is not supported (each connection would see its own empty database); "
            "use sqlite:///PATH"
        )
    return parsed.set(drivername=driver)
