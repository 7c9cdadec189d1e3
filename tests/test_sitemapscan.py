"""The sitemap scan of a domain, through scan_one and the real Fetcher over httpx.MockTransport.

What a user sees in the record: where sitemaps were found (robots.txt, homepage link, probes, indexes),
how many page URLs they list, what each file was, and that nothing about sitemaps turns a domain into an
error, holds it past its deadline, or opens more than a few requests at once.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from domainscan import sitemapscan
from domainscan.config import Settings
from domainscan.fetch import PARALLEL_PER_DOMAIN, Fetcher
from domainscan.models import SITEMAP_FIELDS, ScanResult, Target
from domainscan.netpolicy import AddressPolicy, parse_networks
from domainscan.parsing import PageParser
from domainscan.scan import scan_one
from domainscan.sitemaps import PROBE_PATHS

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
HOMEPAGE = b"<!DOCTYPE html><html><head><title>Shop</title></head><body>hi</body></html>"
HTML = {"content-type": "text/html; charset=utf-8"}
XML = {"content-type": "application/xml"}
TEXT = {"content-type": "text/plain"}
SITE = "https://shop.example"


def urlset(paths: list[str], lastmod: str = "2026-01-0{i}") -> bytes:
    items = "".join(
        f"<url><loc>{SITE}{p}</loc><lastmod>{lastmod.format(i=1 + i % 9)}</lastmod></url>"
        for i, p in enumerate(paths)
    )
    return f'<?xml version="1.0"?><urlset xmlns="{NS}">{items}</urlset>'.encode()


def index(urls: list[str]) -> bytes:
    items = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return f'<?xml version="1.0"?><sitemapindex xmlns="{NS}">{items}</sitemapindex>'.encode()


Answer = httpx.Response | Callable[[httpx.Request], Any]


@dataclass
class FakeSite:
    """Answers by URL (anything else is a 404); records every request and how many were in flight."""

    pages: Mapping[str, Answer]
    delay: float = 0.0
    seen: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.seen.append(url)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = self.pages.get(url)
            if answer is None:
                return httpx.Response(404, headers=HTML, content=b"<html><h1>Not Found</h1></html>")
            if isinstance(answer, httpx.Response):
                return answer
            result = answer(request)
            response: httpx.Response = await result if asyncio.iscoroutine(result) else result
            return response
        finally:
            self.in_flight -= 1


def page(body: bytes, headers: Mapping[str, str] = XML, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers=dict(headers), content=body)


def robots(*sitemaps: str, extra: str = "") -> httpx.Response:
    lines = "User-agent: *\nDisallow: /admin/\n" + extra + "".join(f"Sitemap: {s}\n" for s in sitemaps)
    return page(lines.encode(), TEXT)


async def scan(
    site: FakeSite, *, domain: str = "shop.example", **overrides: Any
) -> tuple[ScanResult, dict[str, Any]]:
    values: dict[str, Any] = {
        "store": False,
        "timeout": 5.0,
        "user_agent": "domainscan-test/1",
        "address_policy": AddressPolicy(parse_networks(["127.0.0.0/8"])),
        "sitemaps": True,
    }
    values.update(overrides)
    settings = Settings(**values)
    target = Target(domain=domain, host=domain, port=None, input=domain)
    async with Fetcher(settings, transport=httpx.MockTransport(site)) as fetcher:
        result = await scan_one(fetcher, PageParser(0), target, settings)
    return result, result.to_record()


def files(record: dict[str, Any]) -> list[tuple[str, str | None, str | None, int]]:
    return [(f["url"], f["kind"], f["found_by"], f["url_count"]) for f in record["sitemap_files"]]


# -- discovery ------------------------------------------------------------------------------------------


async def test_robots_index_and_its_urlsets_gzip_included() -> None:
    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots("/sitemap_index.xml"),  # relative: resolved
            f"{SITE}/sitemap_index.xml": page(index([f"{SITE}/a.xml", f"{SITE}/b.xml.gz"])),
            f"{SITE}/a.xml": page(urlset(["/", "/p/1", "/p/2"])),
            f"{SITE}/b.xml.gz": page(
                gzip.compress(urlset(["/p/2", "/p/3"])), {"content-type": "application/gzip"}
            ),
        }
    )
    result, record = await scan(site)
    assert (record["status"], record["title"]) == ("ok", "Shop")
    assert record["sitemaps"] == [f"{SITE}/sitemap_index.xml"]
    assert record["sitemap_url_count"] == 4  # distinct pages over both files
    assert record["robots_allows_root"] is True
    assert files(record) == [
        (f"{SITE}/sitemap_index.xml", "sitemapindex", "robots", 2),
        (f"{SITE}/a.xml", "urlset", "index", 3),
        (f"{SITE}/b.xml.gz", "urlset", "index", 2),
    ]
    a = record["sitemap_files"][1]
    assert (a["newest_lastmod"], a["oldest_lastmod"], a["http_status"], a["error"], a["capped"]) == (
        "2026-01-03",
        "2026-01-01",
        200,
        None,
        False,
    )
    assert not any(url.endswith(("/sitemap.xml", "/wp-sitemap.xml")) for url in site.seen)  # no probes
    assert list(record)[-len(SITEMAP_FIELDS) :] == list(SITEMAP_FIELDS)
    assert result.sitemap is not None
    assert result.sitemap.urls is None  # page URLs are kept only with --store-urls


async def test_without_sitemap_lines_the_conventional_places_are_probed() -> None:
    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots(),
            f"{SITE}/wp-sitemap.xml": page(urlset(["/", "/about"])),
            f"{SITE}/sitemap.xml": page(HOMEPAGE, HTML),  # a catch-all page, not a sitemap
        }
    )
    _, record = await scan(site)
    assert record["sitemaps"] == [f"{SITE}/wp-sitemap.xml"]
    assert record["sitemap_url_count"] == 2
    assert files(record) == [(f"{SITE}/wp-sitemap.xml", "urlset", "probe", 2)]  # misses are not files
    probes = [u for u in site.seen if u != f"{SITE}/" and not u.endswith("robots.txt")]
    assert sorted(probes) == sorted(f"{SITE}{p}" for p in PROBE_PATHS)


async def test_a_homepage_link_rel_sitemap_is_followed_too() -> None:
    homepage = b'<html><head><title>Shop</title><link rel="sitemap" href="/feeds/map.xml#x"></head></html>'
    site = FakeSite(
        {
            f"{SITE}/": page(homepage, HTML),
            f"{SITE}/robots.txt": robots(f"{SITE}/sitemap.xml"),
            f"{SITE}/sitemap.xml": page(urlset(["/"])),
            f"{SITE}/feeds/map.xml": page(b"https://shop.example/a\nhttps://shop.example/b\n", TEXT),
        }
    )
    _, record = await scan(site)
    assert record["sitemaps"] == [f"{SITE}/sitemap.xml", f"{SITE}/feeds/map.xml"]
    assert record["sitemap_url_count"] == 3
    assert files(record) == [
        (f"{SITE}/sitemap.xml", "urlset", "robots", 1),
        (f"{SITE}/feeds/map.xml", "text", "link", 2),
    ]


@pytest.mark.parametrize(
    ("robots_answer", "allows_root"),
    [
        (page(b"nope", HTML, status=404), True),  # no robots.txt: no rules
        (page(b"down", HTML, status=500), False),  # unreachable: assume everything is disallowed
        (robots(extra="User-agent: domainscan-test\nDisallow: /\n"), False),
    ],
    ids=["404", "500", "disallowed"],
)
async def test_robots_allows_root(robots_answer: httpx.Response, allows_root: bool) -> None:
    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots_answer,
            f"{SITE}/sitemap.xml": page(urlset(["/"])),
        }
    )
    _, record = await scan(site, retries=0)
    assert record["robots_allows_root"] is allows_root
    assert record["sitemaps"] == [
        f"{SITE}/sitemap.xml"
    ]  # reported either way; sitemaps are meant to be found


async def test_robots_and_sitemaps_are_read_where_the_homepage_landed() -> None:
    www = "http://www.shop.example"
    site = FakeSite(
        {
            f"{SITE}/": httpx.Response(301, headers={"location": f"{www}/home"}),
            f"{www}/home": page(HOMEPAGE, HTML),
            f"{www}/robots.txt": robots(f"{www}/sitemap.xml"),
            f"{www}/sitemap.xml": page(urlset(["/"])),
        }
    )
    _, record = await scan(site)
    assert record["url"] == f"{www}/home"
    assert record["sitemaps"] == [f"{www}/sitemap.xml"]
    assert f"{SITE}/robots.txt" not in site.seen


# -- failures stay in the files -------------------------------------------------------------------------


async def test_sitemap_failures_never_make_the_domain_an_error() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request) from ConnectionRefusedError(111, "refused")

    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots(
                f"{SITE}/gone.xml", f"{SITE}/down.xml", f"{SITE}/trap.xml", f"{SITE}/x.xml"
            ),
            f"{SITE}/down.xml": refused,
            f"{SITE}/trap.xml": httpx.Response(302, headers={"location": "http://169.254.169.254/"}),
            f"{SITE}/x.xml": page(b'<!DOCTYPE x [<!ENTITY a "b">]><urlset/>'),
        }
    )
    _, record = await scan(site, address_policy=AddressPolicy())
    assert (record["status"], record["error_kind"]) == ("ok", None)
    errors = {f["url"].rsplit("/", 1)[1]: f["error"] for f in record["sitemap_files"]}
    assert errors["gone.xml"] == "HTTP 404"
    assert errors["down.xml"].startswith("connect: ")
    assert errors["trap.xml"].startswith("blocked: 169.254.169.254 ")
    assert errors["x.xml"] == "refused: DTD/entities"
    # Declared by robots.txt: listed when it could not be checked (no answer), not when it answered 404.
    assert record["sitemaps"] == [f"{SITE}/down.xml", f"{SITE}/trap.xml"]
    assert record["sitemap_url_count"] == 0


async def test_a_web_page_at_a_sitemap_url_is_read_only_far_enough_to_tell() -> None:
    sent: list[int] = []

    async def big_page() -> Any:
        yield b"<!DOCTYPE html>\n<html><head><title>Not here</title></head><body>"
        for _ in range(600):  # about 5 MB
            sent.append(1)
            yield b"<p>" + b"x" * 8192 + b"</p>"

    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots(f"{SITE}/map.xml"),
            f"{SITE}/map.xml": lambda request: httpx.Response(200, headers=HTML, content=big_page()),
        }
    )
    _, record = await scan(site)
    assert record["sitemaps"] == []  # answered, and not a sitemap
    [file] = record["sitemap_files"]
    assert (file["kind"], file["error"]) == ("html", "not a sitemap: an HTML page")
    assert len(sent) < 5


async def test_a_homepage_error_status_still_gets_its_sitemaps_scanned() -> None:
    site = FakeSite(
        {
            f"{SITE}/": page(b"<html>oops</html>", HTML, status=500),
            f"{SITE}/robots.txt": robots(f"{SITE}/sitemap.xml"),
            f"{SITE}/sitemap.xml": page(urlset(["/", "/a"])),
        }
    )
    _, record = await scan(site, retries=0)
    assert (record["status"], record["error_kind"], record["http_status"]) == ("error", "http_status", 500)
    assert (record["sitemaps"], record["sitemap_url_count"]) == ([f"{SITE}/sitemap.xml"], 2)


async def test_an_unreachable_domain_has_no_sitemap_fields() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request) from ConnectionRefusedError(111, "refused")

    site = FakeSite({f"{SITE}/": refused, "http://shop.example/": refused})
    result, record = await scan(site)
    assert record["error_kind"] == "connect"
    assert result.sitemap is None
    assert not set(SITEMAP_FIELDS) & set(record)
    assert all(not u.endswith(("robots.txt", ".xml")) for u in site.seen)


async def test_without_the_option_nothing_but_the_homepage_is_fetched() -> None:
    site = FakeSite({f"{SITE}/": page(HOMEPAGE, HTML), f"{SITE}/robots.txt": robots(f"{SITE}/s.xml")})
    result, record = await scan(site, sitemaps=False)
    assert site.seen == [f"{SITE}/"]
    assert result.sitemap is None
    assert "sitemaps" not in record
    assert not set(SITEMAP_FIELDS) & set(record)


# -- the deadline and the bound --------------------------------------------------------------------------


async def test_one_deadline_for_homepage_and_sitemaps() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return page(urlset(["/"]))

    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots(f"{SITE}/fast.xml", f"{SITE}/slow.xml"),
            f"{SITE}/fast.xml": page(urlset(["/a", "/b"])),
            f"{SITE}/slow.xml": slow,
        }
    )
    started = time.monotonic()
    result, record = await scan(site, timeout=1.0)
    took = time.monotonic() - started
    assert took < 1.5
    assert record["status"] == "ok"
    assert record["sitemap_url_count"] == 2  # what was read before the deadline counts
    slow_file = next(f for f in record["sitemap_files"] if f["url"].endswith("slow.xml"))
    assert slow_file["error"] == "timeout: no complete answer within 1s"
    assert result.elapsed_ms is not None
    assert result.elapsed_ms < 1500


async def test_at_most_a_few_requests_at_once_per_domain() -> None:
    declared = [f"{SITE}/s{n}.xml" for n in range(12)]
    pages: dict[str, Answer] = {f"{SITE}/": page(HOMEPAGE, HTML), f"{SITE}/robots.txt": robots(*declared)}
    pages.update({url: page(urlset([f"/p/{n}"])) for n, url in enumerate(declared)})
    site = FakeSite(pages, delay=0.02)
    _, record = await scan(site)
    assert record["sitemap_url_count"] == 12
    assert site.most_in_flight == PARALLEL_PER_DOMAIN
    assert [f["url"] for f in record["sitemap_files"]] == declared  # in the order they were handed out


async def test_big_bodies_are_parsed_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threaded: list[object] = []
    real = asyncio.to_thread

    async def spy(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        threaded.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr("domainscan.sitemapscan.asyncio.to_thread", spy)
    big = urlset([f"/p/{n}" for n in range(20_000)])  # about 1.6 MiB
    assert len(big) > sitemapscan.THREAD_FEED_BYTES
    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots(f"{SITE}/big.xml", f"{SITE}/small.xml"),
            f"{SITE}/big.xml": page(big),
            f"{SITE}/small.xml": page(urlset(["/"])),
        }
    )
    _, record = await scan(site)
    assert record["sitemap_url_count"] == 20_001
    assert len(threaded) == 1  # the big one only


# -- store_urls, and sitemaps without the homepage -----------------------------------------------------


async def test_store_urls_keeps_at_most_n_entries_per_domain() -> None:
    site = FakeSite(
        {
            f"{SITE}/": page(HOMEPAGE, HTML),
            f"{SITE}/robots.txt": robots(f"{SITE}/a.xml", f"{SITE}/b.xml"),
            f"{SITE}/a.xml": page(urlset(["/", "/1", "/2"])),
            f"{SITE}/b.xml": page(urlset(["/3", "/4", "/5"])),
        }
    )
    result, record = await scan(site, store_urls=4)
    assert result.sitemap is not None
    assert result.sitemap.urls is not None
    assert [e.loc for e in result.sitemap.urls] == [f"{SITE}/", f"{SITE}/1", f"{SITE}/2", f"{SITE}/3"]
    assert result.sitemap.urls[0].lastmod == "2026-01-01"
    assert record["sitemap_url_count"] == 6  # counting is not capped by what is stored
    assert "urls" not in record


async def test_sitemaps_alone_read_robots_where_the_site_answers() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request) from ConnectionRefusedError(111, "refused")

    plain = "http://shop.example"
    site = FakeSite(
        {
            f"{SITE}/robots.txt": refused,  # no https: http, as for a homepage
            f"{plain}/robots.txt": robots(f"{plain}/sitemap.xml"),
            f"{plain}/sitemap.xml": page(urlset(["/", "/a"])),
        }
    )
    result, record = await scan(site, homepage=False)
    assert f"{SITE}/" not in site.seen  # no homepage
    assert f"{plain}/" not in site.seen
    assert (record["status"], record["url"], record["http_status"]) == ("ok", f"{plain}/robots.txt", 200)
    assert record["title"] is None
    assert (record["sitemaps"], record["sitemap_url_count"]) == ([f"{plain}/sitemap.xml"], 2)
    assert result.elapsed_ms is not None


async def test_sitemaps_alone_for_an_unreachable_domain_is_an_error() -> None:
    def no_address(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no address", request=request) from socket.gaierror(
            -2, "Name or service not known"
        )

    _, record = await scan(FakeSite(_Everything(no_address)), homepage=False)
    assert (record["status"], record["error_kind"]) == ("error", "dns")
    assert "sitemaps" not in record


class _Everything(dict[str, Answer]):
    """Pages where every URL gives the same answer."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer

    def get(self, key: str, default: Any = None) -> Answer:
        return self.answer


# -- settings ----------------------------------------------------------------------------------------


def test_a_resumed_batch_keeps_its_sitemap_options() -> None:
    started = Settings.for_scan(
        tenant="t",
        database_url=None,
        store=True,
        db_pool_size=0,
        concurrency=5,
        timeout=3,
        max_bytes=4096,
        user_agent="ua",
        phone_region=None,
        allow_net=[],
        debug=False,
        homepage=False,
        sitemaps=True,
        store_urls=7,
    )
    stored = json.loads(json.dumps(started.options))  # as the batch row gives it back
    resumed = Settings(tenant="t").for_batch(stored)
    assert (resumed.homepage, resumed.sitemaps, resumed.store_urls) == (False, True, 7)
    old = Settings(tenant="t").for_batch({"timeout": 3})  # a batch from before sitemaps existed
    assert (old.homepage, old.sitemaps, old.store_urls) == (True, False, 0)
