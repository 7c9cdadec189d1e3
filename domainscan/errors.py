"""The exceptions domainscan raises, and the error vocabulary of its output record.

Third-party errors (httpx, aiohttp, SQLAlchemy, psycopg, OS errors) are translated into this tree at the
module that meets them, so nothing above those modules needs to know which library failed::

    DomainscanError
     ├── UsageError            bad option value or unreadable input        -> exit 2
     │    └── InputError       a file that is missing, a directory, binary
     ├── InvalidDomain         one input line that is not a scannable domain (becomes a record)
     ├── FetchError            one domain could not be fetched (becomes a record); .kind is an ErrorKind
     └── StorageError          the database could not be reached or written  -> exit 3
          └── SchemaError      the schema is missing or older than this version (says what to run)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """The `error_kind` values of the output record (GUIDE §4); stable, users parse them."""

    INVALID_DOMAIN = "invalid_domain"
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    TIMEOUT = "timeout"
    REDIRECT_LOOP = "redirect_loop"
    HTTP_STATUS = "http_status"
    NOT_HTML = "not_html"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


class DomainscanError(Exception):
    """Base of every error domainscan raises on purpose; its str() is a one-line message for users."""


class UsageError(DomainscanError):
    """A bad option value or input the user must fix; exit code 2."""


class BatchInUse(UsageError):
    """``--resume`` of a batch whose process is still alive (its heartbeat is fresh): nothing is wrong
    with the database, the user must wait for that process or stop it."""


class InputError(UsageError):
    """An input source that cannot be read at all (missing file, a directory, binary data)."""


class InvalidDomain(DomainscanError):
    """One input that is not a scannable domain; `reason` is the one-line why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchError(DomainscanError):
    """A domain whose homepage could not be fetched; `kind` says which way it failed."""

    def __init__(
        self, kind: ErrorKind, message: str, *, url: str | None = None, redirects: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.url = url
        self.redirects = redirects


class StorageError(DomainscanError):
    """The database is unreachable or refused a write; exit code 3. Messages never carry a password."""


class SchemaError(StorageError):
    """The database schema is missing or out of date; the message says which command fixes it."""
