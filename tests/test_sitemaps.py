"""Sitemaps: robots.txt, discovery, ordinary and hostile bodies, the crawl, and the webfarm's sites."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from farm import WEBFARM, unavailable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from domainscan.sitemaps import (
    MAX_URLS,
    PROBE_PATHS,
    FoundBy,
    RobotsFacts,
    SitemapCrawl,
    SitemapFacts,
    SitemapFile,
    SitemapKind,
    UrlEntry,
    is_html_page,
    parse_robots,
    parse_sitemap,
    parse_w3c_datetime,
    probe_urls,
    robots_unavailable,
    sitemap_links,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sitemaps"
USER_AGENT = "domainscan/0.1.0 (+https://github.com/domainscan/domainscan)"
NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(body: bytes, url: str = "https://example.com/sitemap.xml", **kwargs: object) -> SitemapFile:
    options: dict[str, object] = {"content_type": "application/xml", "content_encoding": None, **kwargs}
    return parse_sitemap(body, url, **options)  # type: ignore[arg-type]


def urlset(locs: list[str], namespace: str | None = NS, lastmods: list[str] | None = None) -> bytes:
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    items = []
    for i, loc in enumerate(locs):
        lastmod = f"<lastmod>{lastmods[i]}</lastmod>" if lastmods else ""
        items.append(f"<url><loc>{loc}</loc>{lastmod}</url>")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset{xmlns}>{"".join(items)}</urlset>\n'.encode()


def index(locs: list[str], namespace: str | None = NS) -> bytes:
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    items = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex{xmlns}>{items}</sitemapindex>\n'.encode()


# -- robots.txt -----------------------------------------------------------------------------------------


def test_robots_sitemaps_resolved_deduplicated_in_order_and_root_disallowed_for_us() -> None:
    text = fixture("robots.txt").decode()
    facts = parse_robots(text, "https://harbordental.com/robots.txt", USER_AGENT)
    assert facts.sitemaps == (
        "https://harbordental.com/sitemap_index.xml",
        "https://harbordental.com/news-sitemap.xml",
        "https://cdn.example.net/harbordental/sitemap.xml.gz",
    )
    assert facts.allows_root is False  # "User-agent: domainscan / Disallow: /" beats the "*" group
    assert facts.status == "ok"
    other = parse_robots(text, "https://harbordental.com/robots.txt", "SomeOtherBot/2.0")
    assert other.allows_root is True


def test_robots_disallow_all_and_empty() -> None:
    assert (
        parse_robots("User-agent: *\nDisallow: /\n", "http://a.test/robots.txt", USER_AGENT).allows_root
        is False
    )
    empty = parse_robots("", "http://a.test/robots.txt", USER_AGENT)
    assert empty == RobotsFacts(sitemaps=(), allows_root=True, status="ok")


def test_robots_that_could_not_be_read() -> None:
    assert robots_unavailable(404) == RobotsFacts(allows_root=True, status="missing")
    assert robots_unavailable(503) == RobotsFacts(allows_root=False, status="unreachable")
    assert robots_unavailable(None) == RobotsFacts(allows_root=False, status="unreachable")


# -- discovery ------------------------------------------------------------------------------------------


def test_sitemap_links_from_a_parsed_root_or_bytes() -> None:
    page = (
        b"<html><head><link rel='stylesheet' href='/a.css'>"
        b"<link rel='Sitemap' type='application/xml' href='/sitemap.xml#top'>"
        b"<link rel='alternate sitemap' href='https://cdn.example.net/s.xml'>"
        b"<link rel='sitemap' href='/sitemap.xml'><link rel='sitemap' href='javascript:void(0)'>"
        b"<link rel='sitemap'></head><body></body></html>"
    )
    expected = ["https://example.com/sitemap.xml", "https://cdn.example.net/s.xml"]
    assert sitemap_links(page, "https://example.com/") == expected
    root = etree.fromstring(page, etree.HTMLParser())
    assert sitemap_links(root, "https://example.com/") == expected
    assert sitemap_links(fixture("soft-404.html"), "https://harbordental.com/nope") == [
        "https://harbordental.com/sitemap_index.xml"
    ]
    assert sitemap_links(b"", "https://example.com/") == []
    assert sitemap_links(b"\x00\xff garbage", "https://example.com/") == []


def test_probe_locations() -> None:
    assert PROBE_PATHS == ("/sitemap.xml", "/sitemap_index.xml", "/sitemap.xml.gz", "/wp-sitemap.xml")
    assert probe_urls("http://www.site-00001.test/") == [
        "http://www.site-00001.test/sitemap.xml",
        "http://www.site-00001.test/sitemap_index.xml",
        "http://www.site-00001.test/sitemap.xml.gz",
        "http://www.site-00001.test/wp-sitemap.xml",
    ]


# -- parsing: kinds and namespaces ----------------------------------------------------------------------


def test_namespaced_urlset_with_extensions() -> None:
    f = parse(fixture("urlset-namespaced.xml"), "https://harbordental.com/sitemap.xml", keep_entries=10)
    assert (f.kind, f.status, f.error, f.capped, f.compressed) == (
        SitemapKind.URLSET,
        "ok",
        None,
        False,
        False,
    )
    assert f.url_count == 5
    assert f.entries[0] == UrlEntry("https://harbordental.com/", "2024-03-01", "daily", 1.0)
    assert f.entries[1].loc == "https://harbordental.com/services/cleaning?ref=sitemap&lang=en"
    assert f.entries[1].priority == 0.8
    assert [e.loc for e in f.entries[2:]] == [
        "https://harbordental.com/contact",
        "https://harbordental.com/about",
        "https://harbordental.com/team",
    ]
    assert f.entries[4].lastmod == "last tuesday"  # kept as written, ignored for newest/oldest
    # 09:30 at -07:00 is 16:30Z, earlier than 16:45Z on the same day
    assert f.newest_lastmod == "2024-05-17T16:45:00Z"
    assert f.oldest_lastmod == "2023-11"
    assert f.children == []


def test_bare_urlset_resolves_relative_locations_and_skips_empty_ones() -> None:
    f = parse(fixture("urlset-bare.xml"), "https://bare.example/sitemap.xml", keep_entries=10)
    assert f.kind is SitemapKind.URLSET
    assert f.error is None
    assert [e.loc for e in f.entries] == [
        "https://bare.example/",
        "https://bare.example/a",
        "https://bare.example/relative/page",
    ]
    assert f.url_count == 3
    # 2022-01-01T00:00+02:00 is 2021-12-31T22:00Z: earlier than 23:00Z the day before
    assert f.newest_lastmod == "2021-12-31T23:00:00Z"
    assert f.oldest_lastmod == "2022-01-01T00:00:00+02:00"


@pytest.mark.parametrize("namespace", [NS, None, "http://www.google.com/schemas/sitemap/0.84", "urn:x"])
def test_urlset_and_index_in_any_namespace(namespace: str | None) -> None:
    pages = parse(urlset(["https://a.example/1", "https://a.example/2"], namespace), keep_entries=5)
    assert (pages.kind, pages.url_count, pages.error) == (SitemapKind.URLSET, 2, None)
    idx = parse(index(["https://a.example/s1.xml", "https://a.example/s2.xml"], namespace))
    assert (idx.kind, idx.url_count, idx.error) == (SitemapKind.INDEX, 2, None)
    assert idx.children == ["https://a.example/s1.xml", "https://a.example/s2.xml"]


def test_prefixed_root_element() -> None:
    body = (
        f'<sm:sitemapindex xmlns:sm="{NS}"><sm:sitemap><sm:loc>https://a.example/s.xml</sm:loc>'
        "</sm:sitemap></sm:sitemapindex>"
    ).encode()
    f = parse(body)
    assert f.kind is SitemapKind.INDEX
    assert f.children == ["https://a.example/s.xml"]


def test_index_children_lastmods_and_relative_children() -> None:
    f = parse(fixture("index-namespaced.xml"), "https://shop.example/sitemap_index.xml")
    assert f.kind is SitemapKind.INDEX
    assert f.children == [
        "https://shop.example/sitemap-products-1.xml",
        "https://shop.example/sitemap-pages.xml.gz",
        "https://shop.example/sitemap-blog.xml",
    ]
    assert f.url_count == 3
    assert (f.newest_lastmod, f.oldest_lastmod) == ("2025-06-01T12:00:00+00:00", "2024-01-15")


def test_text_sitemap() -> None:
    body = b"\xef\xbb\xbfhttps://t.example/\r\nhttps://t.example/a\n\n  https://t.example/b  \nnot a url\nhttps://t.example/c"
    f = parse(body, "https://t.example/sitemap.txt", content_type="text/plain", keep_entries=10)
    assert (f.kind, f.url_count, f.error) == (SitemapKind.TEXT, 4, None)
    assert [e.loc for e in f.entries] == [
        "https://t.example/",
        "https://t.example/a",
        "https://t.example/b",
        "https://t.example/c",
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "kind", "error"),
    [
        (b"", "application/xml", None, "not a sitemap: empty body"),
        (b"  \n ", "text/plain", None, "not a sitemap: empty body"),
        (b"Hello, this is not a sitemap\nhttps://x.example/", "text/plain", None, "no URL on its first line"),
        (b'{"urls": ["https://x.example/"]}', "application/json", None, "no URL on its first line"),
        (b"Not found", "text/html", SitemapKind.HTML, "not a sitemap: an HTML page"),
        (b"<rss version='2.0'><channel></channel></rss>", "application/rss+xml", None, "root element <rss>"),
        (b"<?xml version='1.0'?><!-- nothing -->", "application/xml", None, "no root element"),
        (bytes(range(256)) * 64, "application/octet-stream", None, "no URL on its first line"),
    ],
)
def test_bodies_that_are_not_sitemaps(
    body: bytes, content_type: str, kind: SitemapKind | None, error: str
) -> None:
    f = parse(body, content_type=content_type)
    assert f.kind == kind
    assert f.error is not None
    assert error in f.error
    assert f.url_count == 0
    assert not f.is_sitemap


@pytest.mark.parametrize(
    "body",
    [
        fixture("soft-404.html"),
        b"<html><head><title>Home</title></head><body><a href='https://x.example/'>x</a></body></html>",
        b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml"></html>',
        b"\n\n<!-- cached page -->\n<HTML><BODY>https://x.example/</BODY></HTML>",
    ],
)
def test_an_html_page_at_a_sitemap_url_is_not_a_sitemap(body: bytes) -> None:
    for content_type in ("text/html; charset=utf-8", "application/xml", None):
        f = parse(body, content_type=content_type)
        assert (f.kind, f.error, f.url_count) == (SitemapKind.HTML, "not a sitemap: an HTML page", 0)


@pytest.mark.parametrize("prolog", [b"", b'<?xml version="1.0" encoding="UTF-8"?>\n'])
def test_a_utf8_bom_is_no_obstacle(prolog: bytes) -> None:
    body = b"\xef\xbb\xbf" + prolog + urlset(["https://a.example/1", "https://a.example/2"])[len(prolog) :]
    f = parse(body)
    assert (f.kind, f.url_count, f.error) == (SitemapKind.URLSET, 2, None)


def test_a_sitemap_served_as_text_html_is_still_read() -> None:
    f = parse(urlset(["https://a.example/"]), content_type="text/html")
    assert (f.kind, f.url_count, f.error) == (SitemapKind.URLSET, 1, None)


def test_stray_ampersands_and_undefined_entities_are_read_literally() -> None:
    body = urlset(
        ["https://a.example/?a=1&b=2", "https://a.example/caf&eacute;", "https://a.example/x&amp;y"]
    )
    f = parse(body, keep_entries=5)
    assert f.error is None
    assert [e.loc for e in f.entries] == [
        "https://a.example/?a=1&b=2",
        "https://a.example/caf&eacute;",
        "https://a.example/x&y",
    ]


def test_malformed_xml_keeps_what_was_read_and_says_why() -> None:
    body = urlset(["https://a.example/1", "https://a.example/2"]).replace(b"</urlset>", b"<url><loc>x</url>")
    f = parse(body)
    assert f.kind is SitemapKind.URLSET
    assert f.url_count == 2
    assert f.error is not None
    assert f.error.startswith("malformed XML:")
    assert f.status == "error"


# -- parsing: gzip --------------------------------------------------------------------------------------

# hashes in the paths, so that half the compressed bytes hold about half the pages
PAGES = [f"https://gz.example/p/{hashlib.sha256(bytes([i])).hexdigest()}" for i in range(25)]


@pytest.mark.parametrize(
    ("url", "content_encoding", "content_type"),
    [
        ("https://gz.example/sitemap.xml", "gzip", "application/xml"),  # Content-Encoding, not undone
        ("https://gz.example/sitemap.xml.gz", None, "application/gzip"),  # the .gz name
        ("https://gz.example/sitemap.xml", None, "application/xml"),  # magic bytes only, labelled plain
        ("https://gz.example/sitemap", None, "text/html"),  # mislabelled entirely
    ],
)
def test_gzip_however_it_is_labelled(url: str, content_encoding: str | None, content_type: str) -> None:
    body = gzip.compress(urlset(PAGES))
    f = parse(body, url, content_type=content_type, content_encoding=content_encoding)
    assert (f.kind, f.url_count, f.compressed, f.error) == (SitemapKind.URLSET, 25, True, None)


def test_gzip_label_on_a_body_a_client_already_decoded() -> None:
    f = parse(urlset(PAGES), "https://gz.example/sitemap.xml.gz", content_encoding="gzip")
    assert (f.kind, f.url_count, f.compressed, f.error) == (SitemapKind.URLSET, 25, False, None)


def test_gzip_twice_multiple_members_and_text() -> None:
    twice = gzip.compress(gzip.compress(urlset(PAGES)))
    assert parse(twice, "https://gz.example/s.xml.gz", content_encoding="gzip").url_count == 25
    half = len(PAGES) // 2
    members = gzip.compress(urlset(PAGES)[:300]) + gzip.compress(urlset(PAGES)[300:])
    assert parse(members).url_count == 25
    text = parse(gzip.compress("\n".join(PAGES[:half]).encode()), "https://gz.example/s.txt.gz")
    assert (text.kind, text.url_count) == (SitemapKind.TEXT, half)


def test_corrupt_and_truncated_gzip() -> None:
    body = gzip.compress(urlset(PAGES))
    corrupt = body[:20] + bytes(b ^ 0x55 for b in body[20:60]) + body[60:]
    f = parse(corrupt)
    assert f.error is not None
    assert f.error.startswith("corrupt gzip data")
    cut = parse(body[: len(body) // 2])
    assert cut.error == "truncated gzip data"
    assert 0 < cut.url_count < 25
    fetcher_cut = parse(body[: len(body) // 2], truncated=True)
    assert fetcher_cut.error is None
    assert fetcher_cut.capped
    assert fetcher_cut.url_count == cut.url_count


def _bomb(prefix: bytes, filler: bytes, megabytes: int) -> bytes:
    """`prefix`, then `filler` repeated to `megabytes` MiB, gzip-compressed (about 1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(prefix)]
    block = filler * ((1 << 20) // len(filler))
    parts += [packer.compress(block) for _ in range(megabytes)]
    parts.append(packer.compress(b"</urlset>") + packer.flush())
    return b"".join(parts)


BOMB_PREFIX = f'<urlset xmlns="{NS}"><url><loc>https://b.example/</loc></url>'.encode()


def test_a_gzip_bomb_is_flagged_not_inflated() -> None:
    bomb = _bomb(BOMB_PREFIX, b"<pad>" + b" " * 4091 + b"</pad>", 80)  # 80 MiB of padding elements
    assert len(bomb) < 200 * 1024
    started = time.perf_counter()
    f = parse(bomb, "https://b.example/sitemap.xml.gz")
    assert time.perf_counter() - started < 5
    assert f.capped
    assert f.compressed
    assert f.bytes == 50 * 1024 * 1024  # read up to the protocol's limit, not a byte more
    assert (f.kind, f.url_count, f.error) == (SitemapKind.URLSET, 1, None)
    small = parse(bomb, max_bytes=1024 * 1024)
    assert small.capped
    assert small.bytes == 1024 * 1024


def test_a_gzip_bomb_of_whitespace_stops_at_the_parsers_text_limit() -> None:
    bomb = _bomb(BOMB_PREFIX, b" ", 16)
    started = time.perf_counter()
    f = parse(bomb, "https://b.example/sitemap.xml.gz")
    assert time.perf_counter() - started < 5
    assert f.bytes <= 50 * 1024 * 1024
    assert f.url_count == 1
    assert f.error is not None
    assert "Text node too long" in f.error


@pytest.mark.parametrize(
    "body",
    [
        # a url still open across many chunks, its fields read before the junk and after it
        b"<urlset><url><loc>https://j.example/1</loc>"
        + b"<junk/>" * 200_000
        + b"<lastmod>2024-02-02</lastmod></url><url><loc>https://j.example/2</loc></url></urlset>",
        # junk between urls, and inside an element that is no url
        b"<urlset><url><loc>https://j.example/1</loc><lastmod>2024-02-02</lastmod></url>"
        + b"<junk/>" * 200_000
        + b"<wrap>"
        + b"<junk/>" * 200_000
        + b"</wrap><url><loc>https://j.example/2</loc></url></urlset>",
    ],
    ids=["inside-an-open-url", "between-urls"],
)
def test_junk_elements_are_dropped_as_read_and_the_urls_around_them_kept(body: bytes) -> None:
    f = parse(body, keep_entries=5)
    assert f.error is None
    assert [(e.loc, e.lastmod) for e in f.entries] == [
        ("https://j.example/1", "2024-02-02"),
        ("https://j.example/2", None),
    ]


def test_an_uncompressed_body_over_the_byte_cap_is_flagged() -> None:
    body = urlset([f"https://big.example/{i}" for i in range(1000)])
    f = parse(body, max_bytes=len(body) // 2)
    assert f.capped
    assert f.error is None
    assert 0 < f.url_count < 1000


# -- parsing: hostile XML -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xxe.xml", "xxe-external-dtd.xml", "billion-laughs.xml"])
def test_dtds_and_entities_are_refused(name: str) -> None:
    started = time.perf_counter()
    f = parse(fixture(name))
    assert time.perf_counter() - started < 0.5
    assert (f.kind, f.error, f.url_count, f.entries) == (None, "refused: DTD/entities", 0, [])
    assert "root:" not in repr(f)  # nothing of /etc/passwd


def test_xxe_to_a_local_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    payloads = [
        f'<!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        f'<urlset xmlns="{NS}"><url><loc>https://v.example/&xxe;</loc></url></urlset>',
        f'<!DOCTYPE urlset [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>'
        f'<urlset xmlns="{NS}"><url><loc>https://v.example/</loc></url></urlset>',
        f'<!DOCTYPE urlset><urlset xmlns="{NS}"><url><loc>https://v.example/&xxe;</loc></url></urlset>',
    ]
    for payload in payloads:
        f = parse(payload.encode(), keep_entries=5)
        assert f.error == "refused: DTD/entities"
        assert "TOP-SECRET" not in repr(f)
    # no declaration at all: the reference is read as text, it never names a file
    plain = f'<urlset xmlns="{NS}"><url><loc>https://v.example/&xxe;</loc></url></urlset>'
    f = parse(plain.encode(), keep_entries=5)
    assert [e.loc for e in f.entries] == ["https://v.example/&xxe;"]


def test_a_doctype_hidden_behind_a_long_prolog_is_not_parsed() -> None:
    lol = fixture("billion-laughs.xml").decode()
    decl, rest = lol.split("\n", 1)
    body = (decl + "\n<!--" + "x" * (70 * 1024) + "-->\n" + rest).encode()
    started = time.perf_counter()
    f = parse(body)
    assert time.perf_counter() - started < 0.5
    assert f.url_count == 0
    assert f.error is not None
    assert "no root element in the first 64 KiB" in f.error


# -- parsing: caps and speed ----------------------------------------------------------------------------


def test_60000_urls_are_capped_at_50000_and_flagged() -> None:
    locs = [f"https://big.example/p/{i}" for i in range(60_000)]
    f = parse(urlset(locs), keep_entries=10)
    assert (f.kind, f.url_count, f.capped, f.error) == (SitemapKind.URLSET, MAX_URLS, True, None)
    assert len(f.entries) == 10
    text = parse("\n".join(locs).encode(), "https://big.example/sitemap.txt")
    assert (text.kind, text.url_count, text.capped) == (SitemapKind.TEXT, MAX_URLS, True)
    idx = parse(index(locs))
    assert (idx.url_count, len(idx.children), idx.capped) == (MAX_URLS, MAX_URLS, True)
    exact = parse(urlset(locs[:MAX_URLS]))
    assert (exact.url_count, exact.capped) == (MAX_URLS, False)


def test_50000_urls_parse_well_under_a_second() -> None:
    body = b"".join(
        [f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">'.encode()]
        + [
            f"<url><loc>https://example.com/products/item-{i}.html</loc>"
            f"<lastmod>2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00+00:00</lastmod>"
            f"<changefreq>weekly</changefreq><priority>0.{i % 10}</priority></url>\n".encode()
            for i in range(MAX_URLS)
        ]
        + [b"</urlset>"]
    )
    best = min(_timed(lambda: parse(body)) for _ in range(3))
    f = parse(body)
    assert (f.url_count, f.capped, f.error) == (MAX_URLS, False, None)
    assert f.newest_lastmod is not None
    assert f.newest_lastmod.startswith("2025-12-")
    assert best < 1.0, f"{best:.3f}s for {len(body) / 1e6:.1f} MB"


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


# -- W3C datetimes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-17", datetime(2024, 5, 17, tzinfo=UTC)),
        ("2024-05-17T09:30-07:00", datetime(2024, 5, 17, 16, 30, tzinfo=UTC)),
        ("2024-05-17T09:30:15Z", datetime(2024, 5, 17, 9, 30, 15, tzinfo=UTC)),
        ("2024-05-17T09:30:15.25+01:00", datetime(2024, 5, 17, 8, 30, 15, 250000, tzinfo=UTC)),
        (" 2024-05-17T09:30:15+0100 ", datetime(2024, 5, 17, 8, 30, 15, tzinfo=UTC)),
        ("2024-05-17 09:30:15", datetime(2024, 5, 17, 9, 30, 15, tzinfo=UTC)),
        ("2024-13-01", None),
        ("2024-05-17T25:00Z", None),
        ("yesterday", None),
        ("", None),
        ("17/05/2024", None),
        ("0001-01-01T00:00+05:00", None),  # moved before year 1 by its offset: out of range, not a crash
        ("9999-12-31T23:30-05:00", None),
    ],
)
def test_w3c_datetimes(value: str, expected: datetime | None) -> None:
    assert parse_w3c_datetime(value) == expected


# -- the crawl ------------------------------------------------------------------------------------------


@dataclass
class Web:
    """A fake web for the crawl: URL -> body (200), or -> a status code; anything else is a 404."""

    pages: Mapping[str, bytes | int]
    headers: Mapping[str, dict[str, str]] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    def crawl(self, crawl: SitemapCrawl, batch: int | None = 3) -> SitemapFacts:
        rounds = 0
        while not crawl.done:
            rounds += 1
            assert rounds < 1000
            urls = crawl.next_urls(batch)
            assert urls, "not done, but nothing to fetch"
            for url in urls:
                self.fetched.append(url)
                page = self.pages.get(url, 404)
                if isinstance(page, int):
                    crawl.feed(url, b"<html><body>Not found</body></html>", http_status=page)
                else:
                    head = self.headers.get(url, {})
                    crawl.feed(
                        url,
                        page,
                        content_type=head.get("content-type", "application/xml"),
                        content_encoding=head.get("content-encoding"),
                    )
        return crawl.result()


def robots_with(*sitemaps: str) -> RobotsFacts:
    return RobotsFacts(sitemaps=sitemaps, allows_root=True)


def test_index_to_index_to_urlset() -> None:
    web = Web(
        {
            "https://d.example/sitemap_index.xml": index(["https://d.example/idx-2.xml"]),
            "https://d.example/idx-2.xml": index(
                ["https://d.example/a.xml", "https://d.example/b.xml.gz"], None
            ),
            "https://d.example/a.xml": urlset(["https://d.example/1", "https://d.example/2"]),
            "https://d.example/b.xml.gz": gzip.compress(urlset(["https://d.example/3"], None)),
        }
    )
    crawl = SitemapCrawl().start("https://d.example/", robots_with("https://d.example/sitemap_index.xml"))
    facts = web.crawl(crawl)
    assert facts.sitemaps == ["https://d.example/sitemap_index.xml"]
    assert facts.sitemap_url_count == 3
    assert facts.robots_allows_root is True
    assert not facts.capped
    assert facts.not_fetched == 0
    got = {f.url: (f.kind, f.found_by, f.depth, f.url_count) for f in facts.files}
    assert got == {
        "https://d.example/sitemap_index.xml": (SitemapKind.INDEX, FoundBy.ROBOTS, 0, 1),
        "https://d.example/idx-2.xml": (SitemapKind.INDEX, FoundBy.INDEX, 1, 2),
        "https://d.example/a.xml": (SitemapKind.URLSET, FoundBy.INDEX, 2, 2),
        "https://d.example/b.xml.gz": (SitemapKind.URLSET, FoundBy.INDEX, 2, 1),
    }
    assert sorted(web.fetched) == sorted(got)  # no probe: robots named a sitemap


def test_depth_limit() -> None:
    chain_ = {f"https://d.example/i{n}.xml": index([f"https://d.example/i{n + 1}.xml"]) for n in range(6)}
    web = Web(chain_)
    facts = web.crawl(
        SitemapCrawl(max_depth=3).start("https://d.example/", robots_with("https://d.example/i0.xml"))
    )
    assert [f.url for f in facts.files] == [f"https://d.example/i{n}.xml" for n in range(4)]
    assert facts.capped
    assert facts.not_fetched == 1


@pytest.mark.parametrize(
    "pages",
    [
        {"https://c.example/s.xml": index(["https://c.example/s.xml", "https://c.example/p.xml"])},
        {
            "https://c.example/s.xml": index(["https://c.example/t.xml", "https://c.example/p.xml"]),
            "https://c.example/t.xml": index(["https://C.EXAMPLE/s.xml#again", "https://c.example/p.xml"]),
        },
    ],
    ids=["index-lists-itself", "two-indexes-list-each-other"],
)
def test_cycles_end_with_each_url_fetched_once(pages: dict[str, bytes | int]) -> None:
    web = Web({**pages, "https://c.example/p.xml": urlset(["https://c.example/"])})
    facts = web.crawl(SitemapCrawl().start("https://c.example/", robots_with("https://c.example/s.xml")))
    assert len(web.fetched) == len(set(web.fetched)) == len(pages) + 1
    assert facts.sitemap_url_count == 1
    assert not facts.capped


def test_distinct_page_urls_across_files() -> None:
    web = Web(
        {
            "https://u.example/s.xml": index(["https://u.example/a.xml", "https://u.example/b.xml"]),
            "https://u.example/a.xml": urlset(
                ["https://u.example/1", "https://u.example/2", "https://u.example/1"]
            ),
            "https://u.example/b.xml": urlset(["https://u.example/2", "https://u.example/3"]),
            "https://u.example/extra.txt": b"https://u.example/3\nhttps://u.example/4\n",
        }
    )
    crawl = SitemapCrawl(keep_entries=100).start(
        "https://u.example/", robots_with("https://u.example/s.xml", "https://u.example/extra.txt")
    )
    facts = web.crawl(crawl)
    assert facts.sitemap_url_count == 4
    assert [f.url_count for f in facts.files] == [2, 2, 3, 2]  # s.xml, extra.txt, a.xml, b.xml: entries read
    assert [e.loc for e in facts.entries()] == [f"https://u.example/{n}" for n in (3, 4, 1, 2)]


def test_probes_when_robots_names_no_sitemap() -> None:
    web = Web(
        {
            "http://p.example/sitemap.xml": urlset(["http://p.example/", "http://p.example/a"]),
            "http://p.example/sitemap_index.xml": 500,
            "http://p.example/wp-sitemap.xml": fixture("soft-404.html"),
        },
        headers={"http://p.example/wp-sitemap.xml": {"content-type": "text/html"}},
    )
    crawl = SitemapCrawl().start("http://p.example/", RobotsFacts(sitemaps=(), allows_root=False))
    facts = web.crawl(crawl, batch=None)
    assert sorted(web.fetched) == sorted(probe_urls("http://p.example/"))
    assert facts.sitemaps == ["http://p.example/sitemap.xml"]
    assert facts.sitemap_url_count == 2
    assert [f.url for f in facts.files] == ["http://p.example/sitemap.xml"]  # misses are no sitemap files
    assert facts.files[0].found_by is FoundBy.PROBE
    assert facts.robots_allows_root is False


def test_homepage_links_and_robots_unreadable() -> None:
    web = Web({"https://l.example/map.xml": urlset(["https://l.example/"])})
    crawl = SitemapCrawl().start("https://l.example/", None, ["https://l.example/map.xml"])
    facts = web.crawl(crawl)
    assert facts.sitemaps == ["https://l.example/map.xml"]
    assert facts.files[0].found_by is FoundBy.LINK
    assert facts.robots_allows_root is None
    assert len(web.fetched) == 1 + len(PROBE_PATHS)  # robots unread: the conventional places too


def test_what_robots_declares_is_listed_unless_disproved() -> None:
    crawl = SitemapCrawl().start(
        "https://r.example/",
        robots_with("https://r.example/gone.xml", "https://r.example/slow.xml", "https://r.example/page.xml"),
    )
    urls = crawl.next_urls()
    assert len(urls) == 3
    assert not crawl.done
    crawl.feed("https://r.example/gone.xml", b"", http_status=404)
    crawl.fail("https://r.example/slow.xml", "timeout")
    crawl.feed("https://r.example/page.xml", fixture("soft-404.html"), content_type="text/html")
    facts = crawl.result()
    assert crawl.done
    assert facts.sitemaps == ["https://r.example/slow.xml"]  # unchecked: the site's word stands
    assert [(f.url, f.http_status, f.status, f.error) for f in facts.files] == [
        ("https://r.example/gone.xml", 404, "error", "HTTP 404"),
        ("https://r.example/slow.xml", None, "error", "timeout"),
        ("https://r.example/page.xml", 200, "error", "not a sitemap: an HTML page"),
    ]


def test_result_part_way_counts_what_was_not_fetched() -> None:
    crawl = SitemapCrawl().start(
        "https://r.example/", robots_with("https://r.example/a.xml", "https://r.example/b.xml")
    )
    (first,) = crawl.next_urls(1)
    crawl.feed(first, urlset(["https://r.example/1"]))
    crawl.next_urls(1)  # in flight when the deadline ends the scan
    facts = crawl.result()
    assert facts.sitemaps == ["https://r.example/a.xml", "https://r.example/b.xml"]
    assert (facts.sitemap_url_count, facts.not_fetched, facts.capped) == (1, 1, True)


def test_file_cap() -> None:
    children = [f"https://f.example/s{i}.xml" for i in range(20)]
    web = Web(
        {"https://f.example/index.xml": index(children), **{u: urlset([u + "/page"]) for u in children}}
    )
    facts = web.crawl(
        SitemapCrawl(max_files=5).start("https://f.example/", robots_with("https://f.example/index.xml"))
    )
    assert len(web.fetched) == 5
    assert facts.sitemap_url_count == 4
    assert facts.capped
    assert facts.not_fetched == 16


def test_total_url_cap() -> None:
    web = Web(
        {
            "https://t.example/a.xml": urlset([f"https://t.example/a{i}" for i in range(30)]),
            "https://t.example/b.xml": urlset([f"https://t.example/b{i}" for i in range(30)]),
        }
    )
    crawl = SitemapCrawl(max_total_urls=50).start(
        "https://t.example/", robots_with("https://t.example/a.xml", "https://t.example/b.xml")
    )
    facts = web.crawl(crawl)
    assert facts.sitemap_url_count == 50
    assert facts.capped


def test_redirected_sitemap_resolves_against_where_it_landed_and_is_not_fetched_again() -> None:
    crawl = SitemapCrawl().start("https://x.example/", robots_with("https://x.example/sitemap.xml"))
    (url,) = crawl.next_urls()
    crawl.feed(
        url,
        index(["/sitemaps/pages.xml", "https://x.example/sitemaps/index.xml"]),
        final_url="https://x.example/sitemaps/index.xml",
    )
    assert crawl.next_urls() == ["https://x.example/sitemaps/pages.xml"]


def test_feeding_a_url_not_handed_out_is_a_bug() -> None:
    crawl = SitemapCrawl().start("https://x.example/", robots_with("https://x.example/s.xml"))
    with pytest.raises(ValueError, match="not handed out"):
        crawl.feed("https://x.example/s.xml", b"")
    crawl.next_urls()
    crawl.fail("https://x.example/s.xml", "refused")
    with pytest.raises(ValueError, match="answered already"):
        crawl.fail("https://x.example/s.xml", "refused")


# -- the webfarm's sites, read from disk ----------------------------------------------------------------


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sitegen = WEBFARM / "sitegen.py"
    if not sitegen.exists():
        unavailable(f"webfarm not found at {WEBFARM}")
    out = tmp_path_factory.mktemp("sitemap-farm")
    subprocess.run(
        [sys.executable, str(sitegen), "--out", str(out), "--sites", "60", "--kb", "4"],
        check=True,
        capture_output=True,
    )
    return out


class DiskWeb:
    """The farm's sites as nginx would serve them: http://HOST/PATH is DIR/sites/HOST/PATH, else 404."""

    def __init__(self, sites: Path) -> None:
        self.sites = sites

    def get(self, url: str) -> tuple[int, bytes]:
        parts = urlsplit(url)
        path = self.sites / (parts.hostname or "") / parts.path.lstrip("/")
        if parts.hostname and path.is_file() and self.sites in path.resolve().parents:
            return 200, path.read_bytes()
        return 404, b"<html><body><h1>404 Not Found</h1></body></html>"

    def scan(self, site_url: str) -> SitemapFacts:
        robots_url = site_url.rstrip("/") + "/robots.txt"
        status, body = self.get(robots_url)
        robots = (
            parse_robots(body.decode("utf-8", "replace"), robots_url, USER_AGENT)
            if status == 200
            else robots_unavailable(status)
        )
        crawl = SitemapCrawl().start(site_url, robots)
        while not crawl.done:
            for url in crawl.next_urls(4):
                status, body = self.get(url)
                content_type = "text/html" if status != 200 else "text/xml"
                crawl.feed(url, body, http_status=status, content_type=content_type)
        return crawl.result()


def test_webfarm_sites_read_from_disk(farm: Path) -> None:
    web = DiskWeb(farm / "sites")
    expected = [json.loads(line) for line in (farm / "expected.jsonl").read_text().splitlines()]
    ok = [r for r in expected if r["status"] == "ok"]
    shapes = {Path(r["sitemaps"][0]).name if r["sitemaps"] else "none" for r in ok}
    assert shapes == {"none", "sitemap.xml", "sitemap.xml.gz", "sitemap_index.xml"}  # every kind is there
    wrong = []
    for record in ok:
        facts = web.scan(record["url"])
        got = {"sitemaps": facts.sitemaps, "sitemap_url_count": facts.sitemap_url_count}
        want = {"sitemaps": record["sitemaps"], "sitemap_url_count": record["sitemap_url_count"]}
        if got != want:
            wrong.append((record["domain"], got, want))
        assert all(f.error is None for f in facts.files), facts.files
    assert not wrong, wrong[:3]
    assert len(ok) >= 50


# -- never raises ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(
        [b"", b"<urlset>", b'<sitemapindex xmlns="x">', b"\x1f\x8b", b"https://a.example/\n"]
    ),
    body=st.binary(max_size=2048)
    | st.text(alphabet="<>/&;!?[]=\"' \nurlsetlocmapindexDOCTYPE", max_size=512).map(str.encode),
    content_type=st.sampled_from([None, "text/html", "application/xml", "text/plain"]),
)
def test_any_body_gives_a_record_and_no_exception(
    prefix: bytes, body: bytes, content_type: str | None
) -> None:
    f = parse(prefix + body, content_type=content_type, max_urls=5, keep_entries=3)
    assert f.url_count <= 5
    assert f.error is None or "\n" not in f.error
    assert (f.kind in (SitemapKind.URLSET, SitemapKind.INDEX, SitemapKind.TEXT)) == f.is_sitemap


def test_lastmods_at_the_ends_of_time_are_ignored_not_fatal() -> None:
    body = urlset(
        ["https://a.example/1", "https://a.example/2"], lastmods=["0001-01-01T00:00+05:00", "2024-01-01"]
    )
    f = parse(body)
    assert (f.url_count, f.newest_lastmod, f.oldest_lastmod, f.error) == (2, "2024-01-01", "2024-01-01", None)


@pytest.mark.parametrize(
    ("head", "html"),
    [
        (b"<!DOCTYPE html><html><head>", True),
        (b"\xef\xbb\xbf\n  <!-- x --><HTML lang=en>", True),
        (b'<?xml version="1.0"?><!-- generated --><urlset xmlns="x">', False),
        (b"<!-- generated by a plugin --><urlset>", False),  # a comment first is no web page
        (b"\x1f\x8b\x08\x00", False),  # gzip: decided after inflating, by the parser
        (b'<!DOCTYPE foo [<!ENTITY a "b">]><urlset/>', False),  # refused later, not cut short here
        (b"https://example.com/\n", False),
        (b"", False),
    ],
)
def test_is_html_page(head: bytes, html: bool) -> None:
    assert is_html_page(head) is html
