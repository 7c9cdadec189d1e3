"""W3C datetimes, as sitemaps write ``<lastmod>``: parsed into aware UTC datetimes; pure.

Used where lastmods are read (:mod:`domainscan.sitemaps`) and where they are stored as timestamps
(:mod:`domainscan.db.outcomes`), so both agree on what a value means.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["parse_w3c_datetime"]

_W3C = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?)?)?)?"
)


def parse_w3c_datetime(value: str) -> datetime | None:
    """A W3C datetime (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, ``YYYY-MM-DDThh:mm[:ss[.s]]TZD``) as an
    aware UTC datetime; None when it is none. A missing zone is read as UTC, as is a bare date."""
    m = _W3C.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = m.groups()
    try:
        tz = UTC
        if sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        stamp = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
        return stamp.astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, hour 25, an offset past a day, year 0; 0001/9999 moved
        return None  # past the ends of datetime's range by their offset
