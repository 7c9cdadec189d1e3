"""Turn a homepage's bytes into PageFacts: pure, no network, no database.

Cost is the design constraint (GUIDE §8): lxml parses a 60 KiB page in about 0.4 ms, while a single
case-insensitive regex over the raw HTML costs nearly as much. So the document is parsed once and its
tree walked once; everything later works on what that walk collected (meta values, hrefs, srcs, the few
text nodes that contain an ``@``, a ``+`` or a ``(``), never on the raw HTML.

Untrusted input is the normal case: the function never raises on arbitrary bytes (empty, binary, a PDF,
a wrong charset), and hostile shapes stay linear: libxml2 caps nesting depth, and nothing here recurses
over the tree or runs work quadratic in the number of links.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from lxml import etree

from domainscan import tech
from domainscan.models import PageCounts, PageFacts
from domainscan.suffixes import has_known_suffix

# -- decoding -------------------------------------------------------------------------------------------

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_PRESCAN_BYTES = 4096
_DECLARED_CHARSET = re.compile(
    rb"""(?:<meta[^>]{0,512}?charset|^\s*<\?xml[^>]{0,100}?encoding)\s*=\s*["']?\s*([a-z0-9_.:-]{1,40})"""
)
# WHATWG label mappings that Python's codec names do not already cover
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "x-sjis": "cp932",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "windows-31j": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc-kr": "cp949",
    "tis-620": "cp874",
    "iso-8859-9": "cp1254",
}


def _codec(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when the label names no text encoding."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        b"".decode(name)
        return codecs.lookup(name).name
    except (LookupError, UnicodeError, ValueError):
        return None


def _sniff(body: bytes) -> str | None:
    """The charset a ``<meta charset>``, ``http-equiv`` or XML declaration states near the top."""
    head = body[:_PRESCAN_BYTES].lower()
    if b"charset" not in head and b"encoding" not in head:
        return None
    match = _DECLARED_CHARSET.search(head)
    if match is None:
        return None
    codec = _codec(match.group(1).decode("ascii"))
    # a document cannot declare an ASCII-incompatible encoding about itself: the label was read in ASCII
    return "utf-8" if codec is not None and codec.startswith(("utf-16", "utf-32")) else codec


def _as_utf8(body: bytes, encoding: str | None) -> bytes:
    """The document as UTF-8 bytes: BOM first, then the fetcher's charset, a meta charset, else UTF-8.

    libxml2 replaces invalid UTF-8 itself, so UTF-8 bodies pass through untouched; anything else is
    decoded with replacement here, where Python's codecs know every label a site may use.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            body, codec = body[len(bom) :], name
            break
    else:
        codec = _codec(encoding) or _sniff(body) or "utf-8"
    if codec == "utf-8":
        return body
    try:
        return body.decode(codec, "replace").encode("utf-8", "replace")
    except (UnicodeError, LookupError):
        return body


# -- the walk -------------------------------------------------------------------------------------------

_NO_TEXT = frozenset({"script", "style", "noscript", "template", "title"})
_OPAQUE = frozenset({"noscript", "template"})  # their descendants' text is not visible either
_TOUCH_ICONS = frozenset({"apple-touch-icon", "apple-touch-icon-precomposed"})
_SVG = frozenset({"svg", "g", "symbol", "defs"})
_INTERESTING = frozenset({"a", "img", "script", "link", "meta", "title", "base", "noscript", "template"})
_SOCIAL_HINT = re.compile(
    r"facebook\.com|fb\.com|twitter\.com|x\.com|linkedin\.com|instagram\.com|youtube\.com|tiktok\.com"
    r"|github\.com|pinterest\.",
    re.IGNORECASE,
)


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
        elif _SOCIAL_HINT.search(href):
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
    found.counts.words = len(" ".join(texts).split())
    return found


# -- URLs -----------------------------------------------------------------------------------------------


def _absolute(base: str, href: str | None) -> str | None:
    """`href` resolved against `base`, if that gives a web URL; None for empty, broken, ``javascript:``,
    ``data:`` and the like (they are no address a user can visit)."""
    if href is None:
        return None
    href = href.strip()
    if not href:
        return None
    try:
        absolute = urljoin(base, href)
    except ValueError:
        return None
    return absolute if absolute[:8].lower().startswith(("http://", "https://")) else None


# -- JSON-LD --------------------------------------------------------------------------------------------

_JSON_LD_NODES = 20_000  # a bound on the values visited per block, against pathological documents
_SCHEMA_PREFIXES = ("https://schema.org/", "http://schema.org/", "schema:")
_ORGANIZATIONS = frozenset(
    {
        "Organization",
        "LocalBusiness",
        "Corporation",
        "OnlineBusiness",
        "OnlineStore",
        "NGO",
        "Airline",
        "Consortium",
        "NewsMediaOrganization",
        "EducationalOrganization",
        "GovernmentOrganization",
        "MedicalOrganization",
        "SportsOrganization",
        "PerformingGroup",
        "Store",
        "Restaurant",
        "ProfessionalService",
        "LegalService",
        "Attorney",
        "Dentist",
        "MedicalClinic",
        "Physician",
        "RealEstateAgent",
        "FinancialService",
        "FoodEstablishment",
        "LodgingBusiness",
        "Hotel",
        "HomeAndConstructionBusiness",
        "AutomotiveBusiness",
        "HealthAndBeautyBusiness",
    }
)


@dataclass(slots=True)
class _JsonLd:
    types: list[str] = field(default_factory=list)
    logo: str | None = None
    telephones: list[str] = field(default_factory=list)
    same_as: list[str] = field(default_factory=list)


def _load_json(text: str) -> Any:
    text = text.strip()
    for candidate in (text, _unwrap(text)):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    return None


def _unwrap(text: str) -> str:
    """Strip the HTML-comment / CDATA wrappers and trailing semicolons some CMSs put around JSON-LD."""
    for start, end in (("<!--", "-->"), ("//<![CDATA[", "//]]>"), ("<![CDATA[", "]]>")):
        if text.startswith(start) and text.endswith(end):
            text = text[len(start) : -len(end)].strip()
    return text.rstrip(";").strip()


def _schema_types(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, str) and v.strip():
            name = v.strip()
            for prefix in _SCHEMA_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
            out.append(name)
    return out


def _strings(value: Any) -> Iterator[str]:
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, str) and v.strip():
            yield v.strip()


def _logo_url(value: Any) -> str | None:
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, str) and v.strip():
            return v.strip()
        if isinstance(v, dict):
            for key in ("url", "contentUrl"):
                url = v.get(key)
                if isinstance(url, str) and url.strip():
                    return url.strip()
    return None


def _top_items(doc: Any) -> Iterator[dict[str, Any]]:
    """Top-level items of a JSON-LD block and of its @graph, where schema.org types are declared."""
    for item in doc if isinstance(doc, list) else [doc]:
        if isinstance(item, dict):
            yield item
            graph = item.get("@graph")
            if isinstance(graph, list):
                yield from (g for g in graph if isinstance(g, dict))


def _is_organization(node: dict[str, Any]) -> bool:
    return not _ORGANIZATIONS.isdisjoint(_schema_types(node.get("@type")))


def _json_ld(blocks: Iterable[str]) -> _JsonLd:
    out = _JsonLd()
    for block in blocks:
        doc = _load_json(block)
        if doc is None:
            continue
        for item in _top_items(doc):
            out.types.extend(_schema_types(item.get("@type")))
        # telephone, sameAs and organization logos may sit anywhere (publisher, location, ...)
        stack: list[Any] = [doc]
        visited = 0
        while stack and visited < _JSON_LD_NODES:
            node = stack.pop()
            visited += 1
            if isinstance(node, list):
                stack.extend(reversed(node))
                continue
            if not isinstance(node, dict):
                continue
            out.telephones.extend(_strings(node.get("telephone")))
            out.same_as.extend(_strings(node.get("sameAs")))
            if out.logo is None and "logo" in node and _is_organization(node):
                out.logo = _logo_url(node["logo"])
            stack.extend(reversed([v for v in node.values() if isinstance(v, dict | list)]))
    out.types = list(dict.fromkeys(out.types))
    return out


# -- e-mail addresses -----------------------------------------------------------------------------------

# bounded parts (RFC 5321 lengths) and a boundary before the local part keep the scan linear in the text
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,10}"
)
_RETINA = re.compile(r"\d+(?:\.\d+)?x\.", re.IGNORECASE)  # logo@2x.png, icon@1.5x.webp


@lru_cache(maxsize=4096)
def _valid_email(candidate: str) -> str | None:
    """The address lower-cased when it is a real one: valid syntax, below a known public suffix."""
    local, _, domain = candidate.partition("@")
    local = local.lstrip(".")
    if not local or _RETINA.match(domain):
        return None
    try:
        info = validate_email(f"{local}@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    if not has_known_suffix(info.ascii_domain):
        return None
    return info.normalized.lower()


def _emails(mailtos: Iterable[str], texts: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for href in mailtos:
        addresses = unquote(href.strip()[len("mailto:") :].split("?", 1)[0])
        for address in addresses.split(","):
            valid = _valid_email(address.strip())
            if valid:
                found.add(valid)
    for text in texts:
        for match in _EMAIL.finditer(text):
            valid = _valid_email(match.group())
            if valid:
                found.add(valid)
    return sorted(found)


# -- phone numbers --------------------------------------------------------------------------------------

_PHONE_HINT = re.compile(r"\+\s?\d|\(\s?\d{3}\s?\)")
_PHONE_WINDOW = 48  # characters after a hint that can hold one formatted number with an extension
_PHONE_HINTS_MAX = 200  # hints examined per page: a bound for pages made of numbers
# ccTLDs sold as generic names: their sites are not about the territory, so its numbering plan is no hint
_GENERIC_CCTLDS = frozenset({"ai", "cc", "co", "fm", "gg", "io", "me", "sh", "tv", "ws", "to", "ly", "nu"})
_TLD_REGIONS = {"uk": "GB"}
_E164 = phonenumbers.PhoneNumberFormat.E164
_VALID = phonenumbers.Leniency.VALID


def phone_region_for(host: str) -> str | None:
    """The phone numbering region a site's country-code TLD suggests (``.de`` -> ``DE``, ``.uk`` -> ``GB``).

    Generic TLDs (``.com``), ccTLDs marketed as generic (``.io``, ``.co``) and unknown ones give None,
    so only numbers written with a leading ``+`` are accepted for those sites.
    """
    tld = host.strip().rstrip(".").rpartition(".")[2].lower()
    if len(tld) != 2 or not tld.isalpha() or not tld.isascii() or tld in _GENERIC_CCTLDS:
        return None
    region = _TLD_REGIONS.get(tld, tld.upper())
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def _e164(raw: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, _E164))


def _phones(
    tels: Iterable[str], json_ld: Iterable[str], texts: Iterable[str], region: str | None
) -> list[str]:
    found: set[str] = set()
    for href in tels:
        raw = unquote(href.strip()[len("tel:") :]).lstrip("/")
        number = _e164(raw, region)
        if number:
            found.add(number)
    for raw in json_ld:
        number = _e164(raw, region)
        if number:
            found.add(number)
    hints = 0
    for text in texts:
        covered = 0  # the end of what the last match consumed: "(801)" in "+1 (801) ..." is no new hint
        for hint in _PHONE_HINT.finditer(text):
            start = hint.start()
            if start < covered or (hint.group()[0] == "(" and region is None):
                continue  # already read, or a national number without a region to read it in
            hints += 1
            if hints > _PHONE_HINTS_MAX:
                return sorted(found)
            covered = hint.end()
            window = text[start : start + _PHONE_WINDOW]
            for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=_VALID):
                found.add(str(phonenumbers.format_number(match.number, _E164)))
                covered = max(covered, start + match.end)
    return sorted(found)


# -- social profiles ------------------------------------------------------------------------------------

_SOCIAL_HOSTS = {
    "facebook.com": "facebook",
    "fb.com": "facebook",
    "twitter.com": "x",
    "x.com": "x",
    "linkedin.com": "linkedin",
    "instagram.com": "instagram",
    "youtube.com": "youtube",
    "tiktok.com": "tiktok",
    "github.com": "github",
    **{
        f"pinterest.{tld}": "pinterest"
        for tld in (
            "com",
            "co.uk",
            "ca",
            "com.au",
            "de",
            "fr",
            "es",
            "it",
            "jp",
            "com.mx",
            "ch",
            "at",
            "nz",
            "ie",
            "pt",
            "se",
            "dk",
            "ru",
            "cl",
            "ph",
            "co.kr",
            "be",
            "nl",
            "pl",
        )
    },
}
_HOST_PREFIXES = ("www.", "m.", "mobile.", "web.")
_LOCALE_LABEL = re.compile(r"[a-z]{2}(?:[-_][a-z]{2})?")
_SHARED = frozenset(
    {
        "share",
        "sharer",
        "sharer.php",
        "share.php",
        "intent",
        "dialog",
        "plugins",
        "login",
        "signup",
        "privacy",
        "legal",
        "help",
        "search",
        "embed",
    }
)
# first path segments that are an action, a single post or a site page rather than someone's profile
_NOT_PROFILE = {
    "facebook": _SHARED
    | {
        "tr",
        "l.php",
        "login.php",
        "policies",
        "policy.php",
        "watch",
        "events",
        "photo.php",
        "story.php",
        "permalink.php",
        "hashtag",
    },
    "x": _SHARED | {"home", "hashtag", "i", "tos", "explore", "settings"},
    "linkedin": _SHARED | {"sharearticle", "sharing", "cws", "feed", "uas", "posts", "pulse", "jobs"},
    "instagram": _SHARED | {"p", "reel", "reels", "explore", "accounts", "stories", "direct", "tv"},
    "youtube": _SHARED
    | {
        "watch",
        "results",
        "shorts",
        "playlist",
        "redirect",
        "feed",
        "account",
        "signin",
        "subscription_center",
        "live",
    },
    "tiktok": _SHARED | {"tag", "discover", "music", "video"},
    "github": _SHARED
    | {
        "features",
        "pricing",
        "about",
        "topics",
        "marketplace",
        "sponsors",
        "site",
        "security",
        "contact",
        "explore",
        "trending",
        "enterprise",
    },
    "pinterest": _SHARED | {"pin", "_", "business", "ideas"},
}


def _social_platform(url: str) -> str | None:
    """The platform whose profile `url` links to, or None for other sites, share links and homepages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    host = host.rstrip(".")
    for prefix in _HOST_PREFIXES:
        if host.startswith(prefix):
            host = host[len(prefix) :]
            break
    platform = _SOCIAL_HOSTS.get(host)
    if platform is None:
        label, _, rest = host.partition(".")  # de.linkedin.com, uk.pinterest.com, de-de.facebook.com
        if _LOCALE_LABEL.fullmatch(label):
            platform = _SOCIAL_HOSTS.get(rest)
    if platform is None:
        return None
    segments = [s.lower() for s in parts.path.split("/") if s]
    if not segments or segments[0] in _NOT_PROFILE[platform]:
        return None
    if platform in ("x", "facebook") and ("status" in segments or "posts" in segments):
        return None
    return platform


def _social(hrefs: Iterable[str], same_as: Iterable[str], base: str) -> dict[str, str]:
    social: dict[str, str] = {}
    for href in hrefs:
        url = _absolute(base, href)
        platform = _social_platform(url) if url else None
        if url and platform and platform not in social:
            social[platform] = url
    from_links = set(social)
    for url in same_as:
        platform = _social_platform(url)
        if platform and platform not in from_links and platform not in social:
            social[platform] = url
    return social


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
    data = _as_utf8(body, encoding)
    root = _parse(data) if data else None
    if root is None:
        return PageFacts()
    found = _walk(root)
    if phone_region is None:
        phone_region = phone_region_for(_hostname(url))
    base = (_absolute(url, found.base) or url) if found.base else url
    ld = _json_ld(found.json_ld)
    language = (root.get("lang") or root.get("xml:lang") or "").strip()
    if not language:
        declared = _first(found.metas, "content-language") or headers.get("content-language", "")
        language = declared.split(",", 1)[0].strip()
    return PageFacts(
        title=found.title,
        description=_first(found.metas, "description", "og:description"),
        language=language or None,
        canonical_url=_absolute(base, found.canonical),
        favicon_url=_absolute(base, found.icon or found.touch_icon),
        logo_url=_absolute(base, ld.logo or found.logo_img),
        open_graph=_prefixed(found.metas, "og:"),
        twitter=_prefixed(found.metas, "twitter:"),
        json_ld_types=ld.types,
        emails=_emails(found.mailtos, [t for t in found.texts if "@" in t]),
        phones=_phones(
            found.tels, ld.telephones, [t for t in found.texts if "+" in t or "(" in t], phone_region
        ),
        social=_social(found.social_hrefs, ld.same_as, base),
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
    )
