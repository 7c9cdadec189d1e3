"""Turn a homepage's bytes into PageFacts: pure, no network, no database.

Cost is the design constraint (GUIDE §8): lxml parses a 60 KiB page in about 0.4 ms, while a single
case-insensitive regex over the raw HTML costs nearly as much. So the document is parsed once and its
tree walked once; everything later works on what that walk collected (meta values, hrefs, srcs, the few
text nodes that contain an ``@``, a ``+`` or a ``(``), never on the raw HTML.

Untrusted input is the normal case: the function never raises on arbitrary bytes (empty, binary, a PDF,
a wrong charset), and hostile shapes stay linear: libxml2 caps nesting depth, and nothing here recurses
over the tree or runs work quadratic in the number of links.

This module parses and walks; what the collected values mean is read elsewhere: charsets in
:mod:`domainscan.charsets`, JSON-LD in :mod:`domainscan.jsonld`, e-mail addresses and phone numbers in
:mod:`domainscan.contacts`, social profiles in :mod:`domainscan.social`, technologies in
:mod:`domainscan.tech`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lxml import etree

from domainscan import contacts, jsonld, social, tech
from domainscan.charsets import to_utf8
from domainscan.contacts import phone_region_for
from domainscan.models import PageCounts, PageFacts
from domainscan.weburl import web_url

__all__ = ["extract", "phone_region_for"]  # phone_region_for: the default region, for callers to override

# -- the walk -------------------------------------------------------------------------------------------

_NO_TEXT = frozenset({"script", "style", "noscript", "template", "title"})
_OPAQUE = frozenset({"noscript", "template"})  # their descendants' text is not visible either
_TOUCH_ICONS = frozenset({"apple-touch-icon", "apple-touch-icon-precomposed"})
_SVG = frozenset({"svg", "g", "symbol", "defs"})
_INTERESTING = frozenset({"a", "img", "script", "link", "meta", "title", "base", "noscript", "template"})


@dataclass(slots=True)
class _Collected:
    """What one pass over the tree gathered; raw values, resolved and validated afterwards."""

    title: str | None = None
    base: str | None = None
    metas: dict[str, list[str]] = field(default_factory=dict)
    canonical: str | None = None
    icon: str | None = None
    touch_icon: str | None = None
    logo_img: str | None = None
    link_hrefs: list[str] = field(default_factory=list)
    sitemap_hrefs: list[str] = field(default_factory=list)
    script_srcs: list[str] = field(default_factory=list)
    inline_scripts: list[str] = field(default_factory=list)
    json_ld: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    mailtos: list[str] = field(default_factory=list)
    tels: list[str] = field(default_factory=list)
    social_hrefs: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # the visible text nodes, in document order
    counts: PageCounts = field(default_factory=PageCounts)


def _element(found: _Collected, el: etree._Element, tag: str) -> None:
    """Record what one interesting element says (links, scripts, meta, title, images)."""
    counts = found.counts
    if tag == "a":
        href = el.get("href")
        if href is None:
            return
        counts.links += 1
        head = href[:8].lstrip().lower()
        if head.startswith("mailto:"):
            found.mailtos.append(href)
        elif head.startswith("tel:"):
            found.tels.append(href)
        elif social.PROFILE_HINT.search(href):
            found.social_hrefs.append(href)
    elif tag == "img":
        counts.images += 1
        if found.logo_img is None:
            marks = f"{el.get('class', '')} {el.get('id', '')} {el.get('alt', '')}"
            if "logo" in marks.lower():
                found.logo_img = el.get("src") or el.get("data-src")
    elif tag == "script":
        counts.scripts += 1
        src = el.get("src")
        if src:
            found.script_srcs.append(src.strip())
        elif "ld+json" in el.get("type", "").lower():
            found.json_ld.append(el.text or "")
        elif el.text:
            found.inline_scripts.append(el.text)
    elif tag == "link":
        href = el.get("href")
        rel = el.get("rel", "").lower().split()
        if "stylesheet" in rel:
            counts.stylesheets += 1
        if not href:
            return
        found.link_hrefs.append(href.strip())
        if "canonical" in rel and found.canonical is None:
            found.canonical = href
        elif "icon" in rel and found.icon is None:
            found.icon = href
        elif found.touch_icon is None and _TOUCH_ICONS.intersection(rel):
            found.touch_icon = href
        elif "sitemap" in rel:
            found.sitemap_hrefs.append(href)
    elif tag == "meta":
        content = el.get("content")
        if content is None:
            return
        for attr in ("name", "property", "http-equiv"):
            key = el.get(attr)
            if key:
                found.metas.setdefault(key.strip().lower(), []).append(content.strip())
    elif tag == "title":
        parent = el.getparent()
        if found.title is None and (parent is None or parent.tag not in _SVG):
            found.title = " ".join("".join(map(str, el.itertext())).split()) or None
    elif tag == "base" and found.base is None:
        found.base = el.get("href")


def _walk(root: etree._Element) -> _Collected:
    found = _Collected()
    texts = found.texts
    opaque: set[etree._Element] = set()
    for el in root.iter():
        tag = el.tag
        hidden = el in opaque if opaque else False
        if not isinstance(tag, str):  # a comment or processing instruction: only its tail is page text
            if tag is etree.Comment and el.text:
                found.comments.append(el.text)
        else:
            if tag in _INTERESTING:
                _element(found, el, tag)
                if tag in _OPAQUE:
                    opaque.update(el.iterdescendants())
            if not hidden and tag not in _NO_TEXT:
                text = el.text
                if text:
                    texts.append(text)
        if not hidden:
            tail = el.tail
            if tail:
                texts.append(tail)
    found.counts.words = _count_words(" ".join(texts))
    return found


# Latin-1 bytes of str.split()'s whitespace (ASCII's, U+0085 and U+00A0) as b" ", every other byte as b"x".
_LATIN1_SPACES = bytes(0x20 if chr(i).isspace() else 0x78 for i in range(256))


def _count_words(text: str) -> int:
    """``len(text.split())`` without making a string per word (half the cost of a text-heavy page's
    walk): for text within Latin-1, whitespace runs are counted on its bytes."""
    try:
        marks = text.encode("latin-1").translate(_LATIN1_SPACES)
    except UnicodeEncodeError:
        return len(text.split())
    return marks.count(b" x") + marks.startswith(b"x")


# -- the entry point ------------------------------------------------------------------------------------


def _hostname(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _parse(data: bytes) -> etree._Element | None:
    parser = etree.HTMLParser(
        encoding="utf-8", recover=True, remove_comments=False, remove_pis=True, no_network=True
    )
    try:
        return etree.fromstring(data, parser)
    except (etree.LxmlError, ValueError):
        return None


def _first(metas: Mapping[str, list[str]], *names: str) -> str | None:
    for name in names:
        for value in metas.get(name, ()):
            folded = " ".join(value.split())
            if folded:
                return folded
    return None


def _prefixed(metas: Mapping[str, list[str]], prefix: str) -> dict[str, str]:
    """`og:*` / `twitter:*` meta as a dict without the prefix; the first non-empty value of a key wins."""
    out = {}
    for name, values in metas.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            value = next((v for v in values if v), None)
            if value is not None:
                out[name[len(prefix) :]] = value
    return out


def extract(
    body: bytes,
    url: str,
    headers: Mapping[str, str],
    *,
    encoding: str | None = None,
    phone_region: str | None = None,
) -> PageFacts:
    """The facts a homepage states about its site; never raises on any `body`.

    `url` is the final URL (relative links resolve against it, or against ``<base href>``); `headers`
    have lower-case names; `encoding` is the charset the fetcher settled on, if any. `phone_region` is
    the region national phone numbers are read in; by default the one the URL's ccTLD suggests.
    """
    data = to_utf8(body, encoding)
    root = _parse(data) if data else None
    if root is None:
        return PageFacts()
    found = _walk(root)
    if phone_region is None:
        phone_region = phone_region_for(_hostname(url))
    base = (web_url(url, found.base) or url) if found.base else url
    ld = jsonld.read(found.json_ld)
    language = (root.get("lang") or root.get("xml:lang") or "").strip()
    if not language:
        declared = _first(found.metas, "content-language") or headers.get("content-language", "")
        language = declared.split(",", 1)[0].strip()
    return PageFacts(
        title=found.title,
        description=_first(found.metas, "description", "og:description"),
        language=language or None,
        canonical_url=web_url(base, found.canonical),
        favicon_url=web_url(base, found.icon or found.touch_icon),
        logo_url=web_url(base, ld.logo or found.logo_img),
        open_graph=_prefixed(found.metas, "og:"),
        twitter=_prefixed(found.metas, "twitter:"),
        json_ld_types=ld.types,
        emails=contacts.emails(found.mailtos, [t for t in found.texts if "@" in t]),
        phones=contacts.phones(
            found.tels, ld.telephones, [t for t in found.texts if "+" in t or "(" in t], phone_region
        ),
        social=social.profiles(
            [link for href in found.social_hrefs if (link := web_url(base, href))], ld.same_as
        ),
        tech=tech.detect(
            headers=headers,
            meta=found.metas,
            script_srcs=found.script_srcs,
            link_hrefs=found.link_hrefs,
            inline_scripts=found.inline_scripts,
            comments=found.comments,
            html=data,
        ),
        page=found.counts,
        sitemap_links=list(
            dict.fromkeys(
                link for href in found.sitemap_hrefs if (link := web_url(base, href, fragment=False))
            )
        ),
    )
