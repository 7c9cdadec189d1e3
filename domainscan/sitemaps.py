"""Sitemaps: robots.txt, discovery, parsing and the crawl through indexes; pure, no network, no database.

Why this module exists: the original scanner read robots.txt and a fixed list of paths one after another,
matched ``<sitemapindex>`` only without a namespace (so the usual, namespaced indexes were missed),
followed indexes one level deep and dropped ``<lastmod>``. Here:

- **Discovery** reads robots.txt with protego (``Sitemap:`` lines, relative ones resolved; whether our user
  agent may fetch ``/``), the homepage's ``<link rel="sitemap">``, and, only when robots.txt names no
  sitemap, the conventional locations in :data:`PROBE_PATHS`.
- **Parsing** (:func:`parse_sitemap`) feeds one body in chunks to lxml's ``XMLPullParser``, taking only
  the ``<url>``/``<sitemap>`` events and pruning the tree after each chunk, so a 50,000-URL file costs
  about a quarter of a second and memory stays flat whatever the body holds. Elements are matched by
  local name, so ``urlset`` and ``sitemapindex`` are read with the sitemaps.org namespace, without one,
  or with any other; ``<lastmod>`` is kept (newest and oldest per file). Gzip is decided by the magic
  bytes, one layer or two (a client may already have undone a ``Content-Encoding``; a ``.xml.gz``
  served with ``Content-Encoding: gzip`` is gzip twice). Decompression and parsing stop at the
  protocol's limits (50,000 URLs, 50 MiB), so a bomb costs the cap and is flagged (``capped``), not
  inflated. Plain-text sitemaps (a URL a line) are read too.
- **Untrusted XML**: the parser never resolves entities, loads a DTD or touches the network, and a body
  with a doctype (other than an HTML page's) is refused before lxml sees it ("refused: DTD/entities"):
  a DTD is the only way to declare entities, so that stops XXE and billion-laughs, and sitemaps have no
  use for one. An HTML page served at a sitemap URL (a soft 404, a single-page app's catch-all) is
  recognised and reported as not a sitemap. Bare ``&`` in URLs, the commonest sitemap error, is read
  literally.
- **The crawl** (:class:`SitemapCrawl`) is a state machine: it hands out URLs to fetch, takes the bodies
  back and follows index children breadth-first to a depth limit, fetching each URL once (cycles end
  there) and at most ``max_files`` files. It does no I/O: the caller fetches under the domain's
  deadline, caps and address policy, with whatever concurrency it likes.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import chain
from urllib.parse import urljoin, urlsplit

from lxml import etree
from protego import Protego

from domainscan.dates import parse_w3c_datetime
from domainscan.models import UrlEntry  # a plain value the rest of domainscan passes around too
from domainscan.weburl import web_url

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_TOTAL_URLS",
    "MAX_URLS",
    "PROBE_PATHS",
    "FoundBy",
    "RobotsFacts",
    "SitemapCrawl",
    "SitemapFacts",
    "SitemapFile",
    "SitemapKind",
    "UrlEntry",
    "is_html_page",
    "parse_robots",
    "parse_sitemap",
    "parse_w3c_datetime",
    "probe_urls",
    "robots_unavailable",
    "sitemap_links",
]

MAX_URLS = 50_000  # per file: the sitemaps.org limit
MAX_BYTES = 50 * 1024 * 1024  # per file, uncompressed: the sitemaps.org limit
MAX_DEPTH = 3  # index levels followed below a top-level sitemap
MAX_FILES = 100  # fetches per domain, probes included
MAX_TOTAL_URLS = 1_000_000  # distinct page URLs counted per domain

# Where sites put sitemaps when robots.txt does not say: the generic names, then WordPress core's.
PROBE_PATHS: tuple[str, ...] = ("/sitemap.xml", "/sitemap_index.xml", "/sitemap.xml.gz", "/wp-sitemap.xml")


class SitemapKind(StrEnum):
    """What a fetched body turned out to be."""

    URLSET = "urlset"
    INDEX = "sitemapindex"
    TEXT = "text"  # one URL per line
    HTML = "html"  # a web page where a sitemap was expected: not a sitemap


_SITEMAP_KINDS = frozenset({SitemapKind.URLSET, SitemapKind.INDEX, SitemapKind.TEXT})


class FoundBy(StrEnum):
    """How a sitemap URL was discovered."""

    ROBOTS = "robots"  # a Sitemap: line of robots.txt
    LINK = "link"  # <link rel="sitemap"> on the homepage
    PROBE = "probe"  # a conventional location (PROBE_PATHS)
    INDEX = "index"  # listed by a sitemap index


# -- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RobotsFacts:
    """What robots.txt says that we use.

    `status` is ``ok`` (parsed), ``missing`` (4xx: no rules, everything allowed) or ``unreachable`` (5xx
    or no answer: RFC 9309 §2.3.1.4 says to assume everything is disallowed).
    """

    sitemaps: tuple[str, ...] = ()
    allows_root: bool = True
    status: str = "ok"


@dataclass(slots=True)
class SitemapFile:
    """One fetched sitemap URL and what was read from it.

    `url_count` counts the ``<loc>`` entries read: pages for a urlset or text sitemap, child sitemaps
    for an index; it stops at the per-file cap, and `capped` says a cap (URLs, uncompressed bytes, or the
    fetcher's body cap) cut the file short. `newest_lastmod` and `oldest_lastmod` are ``<lastmod>``
    values as written (W3C datetimes, compared as instants; dates and zone-less times read as UTC).
    `entries` holds page entries only when asked for (``keep_entries``). An `error` with counts means
    the file broke part-way and the counts are what was read before.
    """

    url: str
    kind: SitemapKind | None = None
    found_by: FoundBy | None = None
    depth: int = 0
    http_status: int | None = None
    url_count: int = 0
    children: list[str] = field(default_factory=list)
    newest_lastmod: str | None = None
    oldest_lastmod: str | None = None
    capped: bool = False
    compressed: bool = False
    bytes: int = 0  # uncompressed bytes read
    error: str | None = None
    entries: list[UrlEntry] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "error"

    @property
    def is_sitemap(self) -> bool:
        return self.kind in _SITEMAP_KINDS


@dataclass(slots=True)
class SitemapFacts:
    """A domain's sitemap facts, as :meth:`SitemapCrawl.result` reports them.

    `sitemaps` lists the top-level sitemap URLs in discovery order: those that turned out to be sitemaps,
    plus those robots.txt declares that could not be checked (no answer, or never fetched); a probe or
    link that is not a sitemap is not listed. `sitemap_url_count` counts distinct page URLs over all
    files. `files` has a record per fetched URL, except probes that found nothing. `capped` says a limit
    (per-file caps, depth, file count, total URLs) left something unread; `not_fetched` counts known
    sitemap URLs left unfetched.
    """

    sitemaps: list[str] = field(default_factory=list)
    sitemap_url_count: int = 0
    files: list[SitemapFile] = field(default_factory=list)
    robots_allows_root: bool | None = None
    capped: bool = False
    not_fetched: int = 0

    def entries(self) -> Iterator[UrlEntry]:
        """The page entries kept (``keep_entries``), each URL once, in the order read."""
        for f in self.files:
            yield from f.entries


# -- robots.txt and discovery ---------------------------------------------------------------------------


def _unique(urls: Iterable[str | None]) -> list[str]:
    seen: set[str] = set()
    out = []
    for url in urls:
        if url is not None and url not in seen:
            seen.add(url)
            out.append(url)
    return out


def parse_robots(text: str, robots_url: str, user_agent: str) -> RobotsFacts:
    """The ``Sitemap:`` URLs of a robots.txt (resolved against `robots_url`, each once, in order) and
    whether `user_agent` may fetch the site's ``/``."""
    robots = Protego.parse(text)
    sitemaps = _unique(web_url(robots_url, s, fragment=False) for s in robots.sitemaps)
    allows_root = robots.can_fetch(urljoin(robots_url, "/"), user_agent)
    return RobotsFacts(sitemaps=tuple(sitemaps), allows_root=allows_root, status="ok")


def robots_unavailable(http_status: int | None) -> RobotsFacts:
    """The facts for a robots.txt that could not be read: a 4xx means there are no rules (everything is
    allowed); a 5xx or no answer (`http_status` None) means, per RFC 9309, assume everything is not."""
    if http_status is not None and 400 <= http_status < 500:
        return RobotsFacts(allows_root=True, status="missing")
    return RobotsFacts(allows_root=False, status="unreachable")


_XHTML_LINK = "{http://www.w3.org/1999/xhtml}link"


def sitemap_links(doc: etree._Element | bytes, base_url: str) -> list[str]:
    """The ``<link rel="sitemap" href>`` URLs of a page, resolved against `base_url`, each once.

    `doc` is the root lxml already built for the page (what extract parses; walking its ``<link>``
    elements costs microseconds) or the page's bytes, parsed here. Pass the page's ``<base href>`` as
    `base_url` when it has one.
    """
    if isinstance(doc, bytes):
        parser = etree.HTMLParser(recover=True, no_network=True, remove_comments=True, remove_pis=True)
        try:
            root = etree.fromstring(doc, parser)
        except (etree.LxmlError, ValueError):
            return []
        if root is None:
            return []
    else:
        root = doc
    found = []
    for link in root.iter("link", _XHTML_LINK):
        rel = link.get("rel")
        if rel and "sitemap" in rel.lower().split():
            found.append(web_url(base_url, link.get("href"), fragment=False))
    return _unique(found)


def probe_urls(site_url: str) -> list[str]:
    """The conventional sitemap locations of the site at `site_url`."""
    return [urljoin(site_url, path) for path in PROBE_PATHS]


# -- lastmods (W3C datetimes) ---------------------------------------------------------------------------


class _Lastmods:
    """The newest and oldest lastmod of one file; parses each distinct string once."""

    __slots__ = ("_cache", "newest", "newest_at", "oldest", "oldest_at")

    def __init__(self) -> None:
        self._cache: dict[str, datetime | None] = {}
        self.newest: str | None = None
        self.oldest: str | None = None
        self.newest_at: datetime | None = None
        self.oldest_at: datetime | None = None

    def add(self, value: str) -> None:
        try:
            at = self._cache[value]
        except KeyError:
            if len(self._cache) > 4096:
                self._cache.clear()
            at = self._cache[value] = parse_w3c_datetime(value)
        if at is None:
            return
        if self.newest_at is None or at > self.newest_at:
            self.newest_at, self.newest = at, value
        if self.oldest_at is None or at < self.oldest_at:
            self.oldest_at, self.oldest = at, value


# -- reading a body: gzip layers, the byte cap, the sniff -----------------------------------------------

_CHUNK = 256 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_LAYERS = 2  # .xml.gz with Content-Encoding: gzip, fetched by a client that did not undo it
_SNIFF_BYTES = 64 * 1024  # the prolog (XML declaration, comments, doctype) must end within this
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_WHITESPACE = " \t\r\n"


class _Refused(Exception):
    """The body has a doctype, and so may declare entities: nothing of it is parsed."""


class _Source:
    """A body as a stream of uncompressed chunks, at most `limit` bytes; records what happened."""

    def __init__(self, body: bytes, limit: int) -> None:
        self.body = body
        self.limit = limit
        self.compressed = False
        self.over_limit = False
        self.read = 0
        self.error: str | None = None  # corrupt gzip data
        self.cut_short = False  # the gzip stream ended before its end: the body was truncated

    @property
    def broken(self) -> bool:
        return self.error is not None or self.cut_short or self.over_limit

    def chunks(self) -> Iterator[bytes]:
        stream: Iterator[bytes] = _slices(self.body)
        for _ in range(_GZIP_LAYERS):
            head, stream = _peek(stream, len(_GZIP_MAGIC))
            if not head.startswith(_GZIP_MAGIC):
                break
            self.compressed = True
            stream = self._gunzip(stream)
        return self._capped(stream)

    def _gunzip(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Inflate gzip members, `_CHUNK` bytes of output at a time, so that the consumer (and the byte
        cap) decides how much of a bomb is ever inflated. Trailing bytes after the last member are
        ignored, as gzip(1) does."""
        inflater = zlib.decompressobj(wbits=31)
        try:
            for chunk in chunks:
                data = chunk
                while data:
                    if inflater.eof:
                        if not data.startswith(_GZIP_MAGIC[:1]):
                            return
                        inflater = zlib.decompressobj(wbits=31)
                    out = inflater.decompress(data, _CHUNK)
                    data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
                    if out:
                        yield out
            while not inflater.eof and (out := inflater.decompress(b"", _CHUNK)):
                yield out
        except zlib.error as exc:
            self.error = f"corrupt gzip data: {exc}"
            return
        if not inflater.eof:
            self.cut_short = True

    def _capped(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            room = self.limit - self.read
            if len(chunk) > room:
                self.over_limit = True
            data = chunk[:room] if self.over_limit else chunk
            self.read += len(data)
            if data:
                yield data
            if self.over_limit:
                return


def _slices(body: bytes) -> Iterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(view), _CHUNK):
        yield bytes(view[start : start + _CHUNK])


def _peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """The first `size` bytes (fewer at the end of the stream), and the whole stream still to read."""
    parts: list[bytes] = []
    have = 0
    for chunk in chunks:
        parts.append(chunk)
        have += len(chunk)
        if have >= size:
            break
    head = b"".join(parts)
    return head[:size], chain((head,) if head else (), chunks)


# Bare ampersands in URLs are the commonest sitemap error, and fatal to a strict XML parser. With no DTD
# allowed, the only references a sitemap can use are XML's five entities and character references.
_STRAY_AMP = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)")


class _Amps:
    """Stray ampersands: watched for on the first, strict, parse; escaped on the second, which runs only
    when the first failed on a body that has some. (Always escaping would corrupt CDATA sections.)"""

    def __init__(self, fixing: bool) -> None:
        self.fixing = fixing
        self.seen = False

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        return self._fixed(chunks) if self.fixing else self._watched(chunks)

    def _watched(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if not self.seen and b"&" in chunk and _STRAY_AMP.search(chunk):
                self.seen = True  # or an entity split across chunks: at worst, one needless retry
            yield chunk

    def _fixed(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        carry = b""
        for chunk in chunks:
            data = carry + chunk
            cut = data.rfind(b"&", max(0, len(data) - 16))  # an entity split across chunks: decide later
            if cut != -1 and b";" not in data[cut:]:
                data, carry = data[:cut], data[cut:]
            else:
                carry = b""
            yield _STRAY_AMP.sub(b"&amp;", data) if b"&" in data else data
        if carry:
            yield _STRAY_AMP.sub(b"&amp;", carry)


_PROLOG_ITEM = re.compile(r"\s*(?:<\?.*?\?>|<!--.*?-->)", re.DOTALL)
_DOCTYPE = re.compile(r"<!DOCTYPE\s+([^\s>\[]*)", re.IGNORECASE)
_ROOT = re.compile(r"<(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")


def _root_name(head: bytes) -> str | None:
    """The local name of the root element of the XML (or HTML) document that starts with `head`, read
    lexically before any parser sees the body; None when the head holds no root element.

    ``html`` for an HTML doctype. Any other doctype raises _Refused: a DTD is the only way to declare
    entities (XXE, billion laughs), and sitemaps have no use for one.
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "ignore")
    else:
        # Only ASCII syntax is looked at; every byte maps to a char. (A UTF-8 BOM goes first: in
        # latin-1 it would be three letters before the root.)
        text = head.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    text = text.lstrip("\ufeff")
    pos = 0
    while m := _PROLOG_ITEM.match(text, pos):
        pos = m.end()
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    doctype = _DOCTYPE.match(text, pos)
    if doctype is not None:
        if doctype.group(1).lower() == "html":
            return "html"
        raise _Refused
    root = _ROOT.match(text, pos)
    return root.group(1) if root else None


def is_html_page(head: bytes) -> bool:
    """Whether a body that starts with `head` (its first KiB is enough) is a web page (an HTML doctype
    or ``<html>`` root), and so no sitemap: a fetcher may stop reading it there. False when in doubt."""
    try:
        root = _root_name(head)
    except _Refused:
        return False
    return root is not None and root.lower() == "html"


def _is_html_type(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() in _HTML_TYPES


# -- parsing one body -----------------------------------------------------------------------------------

_NOT_HTML = "not a sitemap: an HTML page"
_REFUSED = "refused: DTD/entities"
_WEB_PREFIXES = ("http://", "https://")
_TEXT_URL = re.compile(r"https?://\S+", re.IGNORECASE)


class _EntityTrouble(Exception):
    """The strict parse failed on a body with stray ampersands: read it again with them escaped."""


@dataclass(slots=True)
class _Parse:
    """One file's parse in progress: the record, and every page URL read (for distinct counting)."""

    file: SitemapFile
    locs: list[str] = field(default_factory=list)
    lastmods: _Lastmods = field(default_factory=_Lastmods)


def parse_sitemap(
    body: bytes,
    url: str,
    *,
    content_type: str | None,
    content_encoding: str | None,
    max_urls: int = MAX_URLS,
    max_bytes: int = MAX_BYTES,
    keep_entries: int = 0,
    truncated: bool = False,
) -> SitemapFile:
    """Read one fetched sitemap body; never raises on any `body`.

    `url` is the URL it was fetched from (the final one, after redirects): relative locations resolve
    against it. Whether the body is gzip is decided by its magic bytes, not by `content_encoding` or a
    ``.gz`` name: a client may already have undone a labelled encoding, and a body labelled otherwise
    may be gzip all the same. An HTML page is kind ``html`` with an error; `content_type` only decides
    that for a body that is neither XML nor a text sitemap. Up to `keep_entries` page entries are kept
    in ``entries``. `truncated` says the fetcher's body cap cut the body: the file is flagged ``capped``
    and the broken end is not an error.
    """
    del content_encoding  # see above: the bytes decide
    return _read(
        body,
        url,
        content_type=content_type,
        max_urls=max_urls,
        max_bytes=max_bytes,
        keep_entries=keep_entries,
        truncated=truncated,
    ).file


def _read(
    body: bytes,
    url: str,
    *,
    content_type: str | None,
    max_urls: int,
    max_bytes: int,
    keep_entries: int,
    truncated: bool,
) -> _Parse:
    try:
        return _attempt(body, url, content_type, max_urls, max_bytes, keep_entries, truncated, False)
    except _EntityTrouble:
        return _attempt(body, url, content_type, max_urls, max_bytes, keep_entries, truncated, True)


def _attempt(
    body: bytes,
    url: str,
    content_type: str | None,
    max_urls: int,
    max_bytes: int,
    keep: int,
    truncated: bool,
    fix_amps: bool,
) -> _Parse:
    parse = _Parse(SitemapFile(url=url, capped=truncated))
    file = parse.file
    source = _Source(body, max_bytes)
    stream = source.chunks()
    amps = _Amps(fix_amps)
    stream = amps.wrap(stream)
    head, stream = _peek(stream, _SNIFF_BYTES)
    sniffed = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    try:
        if not sniffed:
            file.error = "not a sitemap: empty body"
        elif sniffed[:1] == b"<" or head.startswith((b"\xff\xfe", b"\xfe\xff")):
            complete = len(head) < _SNIFF_BYTES
            root = _root_name(head)
            if root is None:
                file.error = "not a sitemap: no root element" + ("" if complete else " in the first 64 KiB")
            elif root.lower() == "html":
                file.kind, file.error = SitemapKind.HTML, _NOT_HTML
            elif root == "urlset":
                file.kind = SitemapKind.URLSET
                _parse_xml(parse, stream, source, root, "url", max_urls, keep, amps)
            elif root == "sitemapindex":
                file.kind = SitemapKind.INDEX
                _parse_xml(parse, stream, source, root, "sitemap", max_urls, 0, amps)
            else:
                file.error = f"not a sitemap: root element <{root[:40]}>"
        else:
            _parse_text(parse, stream, max_urls, keep)
            if file.kind is None:
                if _is_html_type(content_type):
                    file.kind, file.error = SitemapKind.HTML, _NOT_HTML
                else:
                    file.error = "not a sitemap: no URL on its first line"
    except _Refused:
        file.kind, file.error = None, _REFUSED
        parse.locs.clear()
    file.compressed = source.compressed
    file.bytes = source.read
    if source.over_limit:
        file.capped = True
    if source.error is not None:  # what broke the stream explains the rest
        file.error = source.error
    elif source.cut_short and not truncated:
        file.error = "truncated gzip data"
    file.newest_lastmod = parse.lastmods.newest
    file.oldest_lastmod = parse.lastmods.oldest
    return parse


_FIELD_TAGS = ("{*}loc", "{*}lastmod", "{*}changefreq", "{*}priority")


def _parse_xml(
    parse: _Parse,
    stream: Iterator[bytes],
    source: _Source,
    root_name: str,
    item: str,
    max_urls: int,
    keep: int,
    amps: _Amps,
) -> None:
    """Read the `item` elements (``url`` or ``sitemap``) of a urlset or index, in any namespace.

    The tree lxml builds is pruned after every chunk (:func:`_prune`), so memory stays at about a
    chunk's worth of elements whatever the body holds, junk elements included.
    """
    file = parse.file
    base = file.url
    locs = parse.locs
    lastmods = parse.lastmods
    is_index = item == "sitemap"
    parser = etree.XMLPullParser(
        events=("start", "end"),
        tag=("{*}" + root_name, "{*}" + item),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    names: dict[object, str] = {}  # tag -> local name, in whatever namespace the file uses
    root: etree._Element | None = None
    count = 0
    full = False
    for data in chain(stream, (None,)):  # None: the end, where close() reports a body cut short
        failure: etree.LxmlError | None = None
        try:
            if data is None:
                parser.close()
            else:
                parser.feed(data)
        except etree.LxmlError as exc:
            failure = exc  # the items read before it still count
        for event, el in parser.read_events():
            if not isinstance(el, etree._Element):
                continue  # only element events were asked for
            if event == "start":
                if root is None:
                    root = el
                continue
            tag = el.tag
            name = names.get(tag)
            if name is None:
                name = names[tag] = _local(tag)
            if name != item:
                continue  # the root's own end
            loc = lastmod = changefreq = priority = None
            for child in el:
                tag = child.tag
                name = names.get(tag)
                if name is None:
                    name = names[tag] = _local(tag)
                if name == "loc":
                    loc = child.text
                elif name == "lastmod":
                    lastmod = child.text
                elif keep and name == "changefreq":
                    changefreq = child.text
                elif keep and name == "priority":
                    priority = child.text
            el.clear()
            if loc is None:
                continue
            loc = loc.strip()
            if not loc.startswith(_WEB_PREFIXES):
                resolved = web_url(base, loc, fragment=False)
                if resolved is None:
                    continue
                loc = resolved
            if count == max_urls:
                full = file.capped = True
                break
            count += 1
            if lastmod:
                lastmod = lastmod.strip()
                lastmods.add(lastmod)
            if is_index:
                file.children.append(loc)
            else:
                locs.append(loc)
                if keep and len(file.entries) < keep:
                    file.entries.append(_entry(loc, lastmod, changefreq, priority))
        if full:
            break
        if failure is not None:
            message = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
            if data is None and (file.capped or source.broken):
                pass  # a cap (ours or the fetcher's) or broken gzip cut the end: _attempt says which
            elif amps.seen and not amps.fixing:
                raise _EntityTrouble from failure
            else:
                file.error = f"malformed XML: {message[:200]}"
            break
        if root is not None:
            _prune(root, item)
    file.url_count = count


def _local(tag: object) -> str:
    return tag[tag.rfind("}") + 1 :] if isinstance(tag, str) else ""


def _prune(root: etree._Element, item: str) -> None:
    """Delete what has been read: along the path of open elements (always the last child at each
    level), every earlier sibling, except the fields an open item still needs."""
    node = root
    while len(node):
        if len(node) > 1:
            if _local(node.tag) == item:
                last = node[-1]
                fields = [f for tag in _FIELD_TAGS if (f := node.find(tag)) is not None and f is not last]
                del node[:-1]  # in C, without a Python object per child: a flood of junk stays cheap
                for position, kept in enumerate(fields):
                    node.insert(position, kept)
            else:
                del node[:-1]
        node = node[-1]


def _entry(loc: str, lastmod: str | None, changefreq: str | None, priority: str | None) -> UrlEntry:
    weight: float | None = None
    if priority:
        try:
            weight = float(priority)
        except ValueError:
            weight = None
        if weight is not None and not 0.0 <= weight <= 1.0:
            weight = None
    return UrlEntry(
        loc=loc,
        lastmod=lastmod or None,
        changefreq=(changefreq.strip().lower() or None) if changefreq else None,
        priority=weight,
    )


def _parse_text(parse: _Parse, stream: Iterator[bytes], max_urls: int, keep: int) -> None:
    """A text sitemap: UTF-8, one absolute URL a line. Its first line must be one; later lines that are
    not are skipped."""
    file = parse.file
    locs = parse.locs
    carry = b""
    first = True
    count = 0
    for chunk in chain(stream, (b"\n",)):
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip().lstrip("\ufeff")
            if not line:
                continue
            is_url = _TEXT_URL.fullmatch(line) is not None
            if first:
                if not is_url:
                    return
                first = False
                file.kind = SitemapKind.TEXT
            if not is_url:
                continue
            if count == max_urls:
                file.capped = True
                file.url_count = count
                return
            count += 1
            locs.append(line)
            if keep and len(file.entries) < keep:
                file.entries.append(UrlEntry(loc=line))
    file.url_count = count


# -- the crawl ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    url: str
    found_by: FoundBy
    depth: int


def _key(url: str) -> str:
    """The identity of a sitemap URL for cycle detection: scheme and host case-folded, no fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), fragment="").geturl()


class SitemapCrawl:
    """The sitemap scan of one domain as a state machine; the caller does the fetching.

    ::

        crawl = SitemapCrawl(max_files=...).start(homepage_url, robots, links)
        while not crawl.done:
            for url in crawl.next_urls(limit):  # bounded concurrency is the caller's
                ...fetch under the domain's deadline, then crawl.feed(url, body, ...) or crawl.fail(url, why)
        facts = crawl.result()  # also fine part-way, when the deadline ends the scan

    Every URL is fetched at most once (an index listing itself or its parent ends there), indexes are
    followed breadth-first to `max_depth` levels below a top-level sitemap, and at most `max_files`
    URLs are handed out. Page URLs are counted distinct across files by their 64-bit hashes, so a
    domain costs a few bytes per URL rather than the URLs themselves.
    """

    def __init__(
        self,
        *,
        max_depth: int = MAX_DEPTH,
        max_files: int = MAX_FILES,
        max_urls: int = MAX_URLS,
        max_bytes: int = MAX_BYTES,
        max_total_urls: int = MAX_TOTAL_URLS,
        keep_entries: int = 0,
        robots_allows_root: bool | None = None,
    ) -> None:
        self.max_depth = max_depth
        self.max_files = max_files
        self.max_urls = max_urls
        self.max_bytes = max_bytes
        self.max_total_urls = max_total_urls
        self.keep_entries = keep_entries
        self.robots_allows_root = robots_allows_root
        self._known: set[str] = set()
        self._pending: deque[_Job] = deque()
        self._in_flight: dict[str, _Job] = {}
        self._handed_out = 0
        self._top: list[_Job] = []
        self._outcomes: dict[str, tuple[SitemapFile, bool]] = {}  # top-level key -> (file, answered)
        self._files: list[SitemapFile] = []
        self._page_hashes: set[int] = set()
        self._kept = 0
        self._skipped = 0
        self._capped = False

    def start(self, site_url: str, robots: RobotsFacts | None, links: Iterable[str] = ()) -> SitemapCrawl:
        """Queue what robots.txt declares and the homepage links to, plus the conventional locations
        when robots.txt names no sitemap (or was not read: `robots` None). Returns the crawl."""
        if robots is not None:
            self.robots_allows_root = robots.allows_root
        declared = robots.sitemaps if robots is not None else ()
        for url in declared:
            self.add(url, FoundBy.ROBOTS)
        for url in links:
            self.add(url, FoundBy.LINK)
        if not declared:
            for url in probe_urls(site_url):
                self.add(url, FoundBy.PROBE)
        return self

    def add(self, url: str, found_by: FoundBy) -> bool:
        """Add a top-level sitemap URL; False when it is known already."""
        key = _key(url)
        if key in self._known:
            return False
        self._known.add(key)
        job = _Job(url, found_by, 0)
        self._top.append(job)
        self._pending.append(job)
        return True

    @property
    def done(self) -> bool:
        """Nothing in flight, and nothing more will be handed out."""
        return not self._in_flight and (not self._pending or self._handed_out >= self.max_files)

    def next_urls(self, limit: int | None = None) -> list[str]:
        """Up to `limit` URLs to fetch now (all that may be, when None); each is handed out once."""
        out: list[str] = []
        while self._pending and self._handed_out < self.max_files and (limit is None or len(out) < limit):
            job = self._pending.popleft()
            self._in_flight[job.url] = job
            self._handed_out += 1
            out.append(job.url)
        return out

    def feed(
        self,
        url: str,
        body: bytes,
        *,
        http_status: int = 200,
        content_type: str | None = None,
        content_encoding: str | None = None,
        final_url: str | None = None,
        truncated: bool = False,
    ) -> SitemapFile:
        """Take the answer to a URL handed out: parse a 2xx body, record any other status as an error,
        and queue an index's children. `final_url` is where redirects ended."""
        del content_encoding  # parse_sitemap explains: the bytes decide
        job = self._take(url)
        if not 200 <= http_status < 300:
            return self._record(job, SitemapFile(url=url, error=f"HTTP {http_status}"), http_status)
        base = final_url or url
        if final_url:
            self._known.add(_key(final_url))
        parse = _read(
            body,
            base,
            content_type=content_type,
            max_urls=self.max_urls,
            max_bytes=self.max_bytes,
            keep_entries=max(0, self.keep_entries - self._kept),
            truncated=truncated,
        )
        file = parse.file
        file.url = url
        self._count(parse)
        for child in file.children:
            self._queue_child(child, job.depth + 1)
        return self._record(job, file, http_status)

    def fail(self, url: str, error: str, *, http_status: int | None = None) -> SitemapFile:
        """Take a URL handed out that got no usable answer (timeout, refused, blocked, ...)."""
        job = self._take(url)
        return self._record(job, SitemapFile(url=url, error=error), http_status)

    def result(self) -> SitemapFacts:
        """The domain's facts so far; whatever is still pending or in flight counts as not fetched."""
        sitemaps = []
        for job in self._top:
            outcome = self._outcomes.get(_key(job.url))
            if outcome is None or not outcome[1]:
                listed = job.found_by is FoundBy.ROBOTS
            else:
                listed = outcome[0].is_sitemap
            if listed:
                sitemaps.append(job.url)
        not_fetched = self._skipped + len(self._pending) + len(self._in_flight)
        return SitemapFacts(
            sitemaps=sitemaps,
            sitemap_url_count=len(self._page_hashes),
            files=list(self._files),
            robots_allows_root=self.robots_allows_root,
            capped=self._capped or not_fetched > 0 or any(f.capped for f in self._files),
            not_fetched=not_fetched,
        )

    def _take(self, url: str) -> _Job:
        try:
            return self._in_flight.pop(url)
        except KeyError:
            raise ValueError(f"{url} was not handed out by next_urls(), or was answered already") from None

    def _record(self, job: _Job, file: SitemapFile, http_status: int | None) -> SitemapFile:
        file.found_by = job.found_by
        file.depth = job.depth
        file.http_status = http_status
        if job.depth == 0:
            self._outcomes[_key(job.url)] = (file, http_status is not None)
        if not (job.found_by is FoundBy.PROBE and not file.is_sitemap):
            self._files.append(file)  # a probe that found nothing is no sitemap file
        return file

    def _count(self, parse: _Parse) -> None:
        """Add a file's page URLs to the domain's distinct set; keep only entries of new URLs."""
        hashes = self._page_hashes
        entries = parse.file.entries
        if entries:
            fresh = []
            for entry in entries:
                h = hash(entry.loc)
                if h not in hashes and len(hashes) < self.max_total_urls:
                    hashes.add(h)
                    fresh.append(entry)
            parse.file.entries = fresh
            self._kept += len(fresh)
        room = self.max_total_urls - len(hashes)
        if len(parse.locs) <= room:
            hashes.update(map(hash, parse.locs))
            return
        for loc in parse.locs:
            if len(hashes) >= self.max_total_urls:
                self._capped = True
                return
            hashes.add(hash(loc))

    def _queue_child(self, url: str, depth: int) -> None:
        key = _key(url)
        if key in self._known:
            return  # fetched, queued, or a cycle
        if depth > self.max_depth or self._handed_out + len(self._pending) >= self.max_files:
            self._skipped += 1
            return
        self._known.add(key)
        self._pending.append(_Job(url, FoundBy.INDEX, depth))
