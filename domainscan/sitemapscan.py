"""The sitemap scan of one domain: read robots.txt, then fetch and follow its sitemaps, under the domain's
deadline.

:mod:`domainscan.sitemaps` decides (what robots.txt says, what a body holds, what to fetch next, and when
to stop); this module only fetches what it is told to, through the same :class:`~domainscan.fetch.Fetcher`
as the homepage, so the address policy, redirects, retries and decoding are the homepage's, and so is the
deadline: :func:`scan_sitemaps` gets the :class:`~domainscan.fetch.Deadline` the homepage fetch used, and
whatever time it left is all the sitemaps get.

- **robots.txt** is read up to :data:`ROBOTS_MAX_BYTES`; a 4xx means no rules, a 5xx or no answer means
  "assume everything is disallowed" (RFC 9309), which only ``robots_allows_root`` reports: the sitemap
  locations are still probed, as sitemaps are meant to be found.
- **Fetching** is bounded per domain: at most :data:`~domainscan.fetch.PARALLEL_PER_DOMAIN` requests in
  flight (probes included), on top of the batch's ``--concurrency``. Each sitemap file is read up to the
  protocol's 50 MiB, except a web page (a soft 404, a single-page app's catch-all, a hostile 1 GiB gzip
  page), which is read only far enough to tell; a body that is large (or gzip, which may inflate to the
  cap) is parsed in a thread, so one domain's 50,000-URL sitemap does not stall every other domain.
- **Failures stay in the files.** A sitemap that times out, is refused or is not a sitemap becomes an
  ``error`` in its per-file record; the domain's status is the homepage's. When the deadline passes, what
  is in flight ends as timeouts, nothing more is fetched, and the facts so far are reported. (A parse
  already running in its thread is let finish: it is bounded by the per-file caps.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterable
from functools import partial
from urllib.parse import urljoin

from domainscan.config import Settings
from domainscan.errors import FetchError
from domainscan.fetch import PARALLEL_PER_DOMAIN, Deadline, Fetcher
from domainscan.models import Fetched, SitemapFileInfo, SitemapScan
from domainscan.sitemaps import (
    MAX_BYTES,
    RobotsFacts,
    SitemapCrawl,
    SitemapFile,
    is_html_page,
    parse_robots,
    robots_unavailable,
)

__all__ = ["ROBOTS_MAX_BYTES", "ROBOTS_PATH", "robots_facts", "scan_sitemaps", "site_of"]

ROBOTS_PATH = "/robots.txt"
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 §2.5: crawlers must read at least 500 KiB
SITEMAP_ACCEPT = "application/xml,text/xml;q=0.9,text/plain;q=0.8,*/*;q=0.5"
THREAD_FEED_BYTES = 1 << 20  # bodies costlier than this are parsed off the event loop
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_COST = 8  # a gzip body is weighed as this many times its size: it inflates before it is parsed


def site_of(url: str) -> str:
    """The root (``scheme://host[:port]/``) of the site `url` is on."""
    return urljoin(url, "/")


def robots_facts(fetched: Fetched | None, user_agent: str) -> RobotsFacts:
    """What a robots.txt fetch says: parsed when it answered 2xx, else per :func:`robots_unavailable`
    (`fetched` None: no answer at all)."""
    if fetched is None:
        return robots_unavailable(None)
    if 200 <= fetched.http_status < 300:
        return parse_robots(fetched.body.decode("utf-8-sig", "replace"), fetched.url, user_agent)
    return robots_unavailable(fetched.http_status)


async def scan_sitemaps(
    fetcher: Fetcher,
    site_url: str,
    settings: Settings,
    deadline: Deadline,
    *,
    robots: RobotsFacts | None = None,
    links: Iterable[str] = (),
) -> SitemapScan:
    """Scan the sitemaps of the site at `site_url` before `deadline`; never raises FetchError.

    Reads the site's robots.txt unless `robots` says what it holds already; `links` are the homepage's
    ``<link rel="sitemap">`` URLs.
    """
    if robots is None:
        try:
            fetched: Fetched | None = await fetcher.fetch_url(
                urljoin(site_url, ROBOTS_PATH), max_bytes=ROBOTS_MAX_BYTES, deadline=deadline
            )
        except FetchError:
            fetched = None
        robots = robots_facts(fetched, settings.user_agent)
    # A URL with control characters can be neither fetched nor stored (PostgreSQL refuses NUL in text).
    robots = dataclasses.replace(robots, sitemaps=tuple(u for u in robots.sitemaps if u.isprintable()))
    crawl = SitemapCrawl(keep_entries=settings.store_urls).start(
        site_url, robots, [u for u in links if u.isprintable()]
    )
    await _crawl(fetcher, crawl, deadline)
    facts = crawl.result()
    return SitemapScan(
        sitemaps=facts.sitemaps,
        url_count=facts.sitemap_url_count,
        robots_allows_root=facts.robots_allows_root,
        files=[_file_info(f) for f in facts.files],
        urls=list(facts.entries()) if settings.store_urls else None,
    )


async def _crawl(fetcher: Fetcher, crawl: SitemapCrawl, deadline: Deadline) -> None:
    """Fetch what the crawl hands out, PARALLEL_PER_DOMAIN at a time, and feed it the answers in the
    order the URLs were handed out (so the per-file records come out the same way every time)."""
    running: dict[asyncio.Task[Fetched | FetchError], tuple[int, str]] = {}
    order = itertools.count()
    try:
        while True:
            if not deadline.expired:
                for url in crawl.next_urls(PARALLEL_PER_DOMAIN - len(running)):
                    task = asyncio.create_task(_get(fetcher, url, deadline))
                    running[task] = (next(order), url)
            if not running:
                return
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: running[t][0]):
                _, url = running.pop(task)
                await _feed(crawl, url, task.result())
    finally:
        for task in running:  # only when cancelled (the batch is stopping) or a bug raised
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def _get(fetcher: Fetcher, url: str, deadline: Deadline) -> Fetched | FetchError:
    try:
        return await fetcher.fetch_url(
            url, max_bytes=MAX_BYTES, deadline=deadline, accept=SITEMAP_ACCEPT, prefix_only_if=is_html_page
        )
    except FetchError as exc:
        return exc


async def _feed(crawl: SitemapCrawl, url: str, outcome: Fetched | FetchError) -> None:
    if isinstance(outcome, FetchError):
        crawl.fail(url, outcome.message)
        return
    feed = partial(
        crawl.feed,
        url,
        outcome.body,
        http_status=outcome.http_status,
        content_type=outcome.content_type,
        content_encoding=outcome.headers.get("content-encoding"),
        final_url=outcome.url,
        truncated=outcome.truncated,
    )
    body = outcome.body
    cost = len(body) * (_GZIP_COST if body.startswith(_GZIP_MAGIC) else 1)
    if cost > THREAD_FEED_BYTES:
        await asyncio.to_thread(feed)  # the crawl is touched by nothing else meanwhile: we wait here
    else:
        feed()


def _file_info(file: SitemapFile) -> SitemapFileInfo:
    return SitemapFileInfo(
        url=file.url,
        kind=None if file.kind is None else file.kind.value,
        found_by=None if file.found_by is None else file.found_by.value,
        url_count=file.url_count,
        newest_lastmod=file.newest_lastmod,
        oldest_lastmod=file.oldest_lastmod,
        http_status=file.http_status,
        error=file.error,
        capped=file.capped,
    )
