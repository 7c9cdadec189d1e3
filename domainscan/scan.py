"""One domain, start to finish: fetch its homepage, judge the answer, extract the facts.

Every outcome is a ScanResult: a failure becomes an error record with its ErrorKind, never an
exception, so one bad site cannot stop a batch. Also the records for inputs that were never fetched
(invalid lines, cancelled scans), so they share one shape.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from domainscan.config import Settings
from domainscan.errors import ErrorKind, FetchError
from domainscan.extract import extract, phone_region_for
from domainscan.fetch import Fetcher
from domainscan.models import Fetched, InvalidInput, ScanResult, Target

THREAD_PARSE_BYTES = 1 << 20  # bodies larger than this are parsed off the event loop


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invalid_result(item: InvalidInput, tenant: str) -> ScanResult:
    where = f"line {item.line}: " if item.line is not None else ""
    return ScanResult(
        domain=None,
        input=item.input,
        tenant=tenant,
        scanned_at=utc_now(),
        error_kind=ErrorKind.INVALID_DOMAIN,
        error=f"{where}{item.reason}",
        line=item.line,
    )


async def scan_one(fetcher: Fetcher, target: Target, settings: Settings) -> ScanResult:
    """Fetch one homepage and extract its facts; every failure becomes an error record, none escapes."""
    started = time.monotonic()
    result = ScanResult(
        domain=target.domain,
        input=target.input,
        tenant=settings.tenant,
        scanned_at=utc_now(),
        line=target.line,
    )
    try:
        fetched = await fetcher.fetch(target)
    except FetchError as exc:
        result.error_kind, result.error = exc.kind, exc.message
        result.url, result.redirects = exc.url, list(exc.redirects)
        result.elapsed_ms = round((time.monotonic() - started) * 1000)
        return result
    _describe_response(result, fetched)
    if fetched.http_status >= 400:
        result.error_kind = ErrorKind.HTTP_STATUS
        result.error = f"the homepage answered HTTP {fetched.http_status}"
    elif not fetched.is_html:
        result.error_kind = ErrorKind.NOT_HTML
        result.error = f"the homepage is not HTML ({fetched.content_type or 'no content type'})"
    else:
        region = settings.phone_region or phone_region_for(target.host)
        args = (fetched.body, fetched.url, fetched.headers)
        if len(fetched.body) > THREAD_PARSE_BYTES:
            result.facts = await asyncio.to_thread(
                extract, *args, encoding=fetched.encoding, phone_region=region
            )
        else:
            result.facts = extract(*args, encoding=fetched.encoding, phone_region=region)
    result.elapsed_ms = round((time.monotonic() - started) * 1000)
    return result


def _describe_response(result: ScanResult, fetched: Fetched) -> None:
    result.url = fetched.url
    result.http_status = fetched.http_status
    result.redirects = list(fetched.redirects)
    result.server = fetched.server
    result.content_type = fetched.content_type
    result.bytes = len(fetched.body)
    result.truncated = fetched.truncated


def cancelled_result(target: Target, tenant: str, job_id: int | None, batch_id: int | None) -> ScanResult:
    return ScanResult(
        domain=target.domain,
        input=target.input,
        tenant=tenant,
        scanned_at=utc_now(),
        error_kind=ErrorKind.CANCELLED,
        error="cancelled: the batch was interrupted before this domain finished",
        line=target.line,
        job_id=job_id,
        batch_id=batch_id,
    )
