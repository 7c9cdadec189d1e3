"""One domain, start to finish: fetch its homepage, judge the answer, extract the facts, and (with
``--sitemaps``) scan its robots.txt and sitemaps, all under one deadline.

Every outcome is a ScanResult: a failure becomes an error record with its ErrorKind, never an
exception, so one bad site cannot stop a batch. Also the records for inputs that were never fetched
(invalid lines, cancelled scans), so they share one shape.

The homepage decides the domain's status; the sitemap scan only adds its own fields, and its failures
stay in its per-file records. Sitemaps are looked for whenever the site answered at all (an HTTP error
status, a page that is not HTML and a redirect loop are answers; robots.txt and sitemaps are served
independently of the homepage), and not when it could not be reached (dns, connect, tls, blocked,
timeout). Without the homepage (``domainscan sitemaps``), robots.txt takes its place: found the way a
homepage is (https, http, ``www.``), it decides the status and fills ``url``, ``http_status`` and the
other response fields.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from domainscan.config import Settings
from domainscan.errors import ErrorKind, FetchError
from domainscan.fetch import Deadline, Fetcher
from domainscan.models import Fetched, InvalidInput, ScanResult, Target
from domainscan.parsing import PageParser


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


async def scan_one(fetcher: Fetcher, parser: PageParser, target: Target, settings: Settings) -> ScanResult:
    """Scan one domain as `settings` say (homepage, sitemaps or both) within ``settings.timeout``;
    every failure becomes an error record, none escapes."""
    started = time.monotonic()
    result = ScanResult(
        domain=target.domain,
        input=target.input,
        tenant=settings.tenant,
        scanned_at=utc_now(),
        line=target.line,
    )
    deadline = Deadline.after(settings.timeout)
    async with fetcher.site():
        if settings.homepage:
            answered = await _scan_homepage(fetcher, parser, target, settings, deadline, result)
            if settings.sitemaps and answered is not None:
                from domainscan.sitemapscan import scan_sitemaps, site_of

                links = result.facts.sitemap_links
                result.sitemap = await scan_sitemaps(
                    fetcher, site_of(answered), settings, deadline, links=links
                )
        else:
            await _scan_sitemaps_alone(fetcher, target, settings, deadline, result)
    result.elapsed_ms = round((time.monotonic() - started) * 1000)
    return result


async def _scan_homepage(
    fetcher: Fetcher,
    parser: PageParser,
    target: Target,
    settings: Settings,
    deadline: Deadline,
    result: ScanResult,
) -> str | None:
    """Fetch the homepage into `result`; returns a URL of the site that answered (None: nothing did)."""
    try:
        fetched = await fetcher.fetch(target, deadline=deadline)
    except FetchError as exc:
        _describe_error(result, exc)
        return _answered(exc)
    _describe_response(result, fetched)
    if fetched.http_status >= 400:
        result.error_kind = ErrorKind.HTTP_STATUS
        result.error = f"the homepage answered HTTP {fetched.http_status}"
    elif not fetched.is_html:
        result.error_kind = ErrorKind.NOT_HTML
        result.error = f"the homepage is not HTML ({fetched.content_type or 'no content type'})"
    else:
        result.facts = await parser.facts(fetched, host=target.host, phone_region=settings.phone_region)
    return fetched.url


async def _scan_sitemaps_alone(
    fetcher: Fetcher, target: Target, settings: Settings, deadline: Deadline, result: ScanResult
) -> None:
    """``domainscan sitemaps``: robots.txt stands in for the homepage, then the sitemaps of its site."""
    from domainscan.sitemapscan import ROBOTS_MAX_BYTES, ROBOTS_PATH, robots_facts, scan_sitemaps, site_of

    try:
        robots = await fetcher.fetch_site_file(
            target, ROBOTS_PATH, max_bytes=ROBOTS_MAX_BYTES, deadline=deadline
        )
    except FetchError as exc:
        _describe_error(result, exc)
        if (answered := _answered(exc)) is not None:
            result.sitemap = await scan_sitemaps(
                fetcher, site_of(answered), settings, deadline, robots=robots_facts(None, settings.user_agent)
            )
        return
    _describe_response(result, robots)
    site = site_of(robots.redirects[0] if robots.redirects else robots.url)  # where the site answered
    facts = robots_facts(robots, settings.user_agent)
    result.sitemap = await scan_sitemaps(fetcher, site, settings, deadline, robots=facts)


def _describe_error(result: ScanResult, exc: FetchError) -> None:
    result.error_kind, result.error = exc.kind, exc.message
    result.url, result.redirects = exc.url, list(exc.redirects)


def _answered(exc: FetchError) -> str | None:
    """A URL of the site, when a failed fetch still got answers from it: a redirect loop is a site
    that answers (its robots.txt and sitemaps may well be served); dns, connect, tls, blocked and
    timeout are not."""
    if exc.kind is ErrorKind.REDIRECT_LOOP and exc.redirects:
        return exc.redirects[0]
    return None


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
