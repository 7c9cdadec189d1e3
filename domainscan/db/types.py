"""Column types shared by the tables: one JSON type for both dialects, and UTC timestamps.

SQLite has no time zones: SQLAlchemy stores its DateTime as text and drops any offset, so a value bound
in another zone would silently compare wrong. UTCDateTime converts to UTC on the way in and marks
values read back as UTC, so ``last_scanned_at <= :scanned_at`` means the same thing on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# none_as_null: a Python None is stored as SQL NULL, not as the JSON literal 'null'.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

# Domains sort byte-wise ("C" collation) on PostgreSQL as they do on SQLite, whatever the database's
# locale: listings come out in the same order everywhere, and keyset paging can use the unique index.
DomainName = String(260).with_variant(String(260, collation="C"), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect (``timestamptz`` on PostgreSQL)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: domainscan stores timezone-aware UTC timestamps")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, as in the output records."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    """An ISO 8601 timestamp (``Z`` or an offset; no offset means UTC) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
