"""Recognize the technologies behind a page from fingerprints shipped in `data/fingerprints.json`.

The rules are Wappalyzer-style data, not code, so adding a technology never touches this module. They are
matched against what the parsed page already offers (headers, meta tags, script srcs, link hrefs, inline
scripts, comments) rather than by running dozens of regular expressions over the raw HTML, which would
cost many times the parse (GUIDE §8). Two devices keep matching cheap:

- every regex over a header, meta value, src or href is gated by the longest literal that any match must
  contain (derived from the regex itself), checked with a substring test before the regex runs;
- rules over large text (the whole document, inline scripts, comments) name a literal explicitly; the
  optional regex then runs only in a small window around the literal's first occurrences.

A rule's first capture group, when it matched, is the version. Rules are tried in a fixed order (meta,
headers, script srcs, link hrefs, inline scripts, comments, document), the first version found wins and a
later one only replaces it when it is more precise (``10`` from a generator, then ``10.2.1`` from a src).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from domainscan.models import TechHit

_FLAGS = re.IGNORECASE
_VERSION = re.compile(r"\d+(?:\.\d+)*")
_WINDOW = 256  # characters either side of a literal that a text rule's regex may look at
_OCCURRENCES = 5  # occurrences of a text rule's literal that are tried before giving up
_MIN_GATE = 3  # shorter literals filter too little to be worth a substring test
_RULE_KEYS = frozenset(
    {
        "categories",
        "implies",
        "headers",
        "meta",
        "script_src",
        "link_href",
        "inline_script",
        "comment",
        "html",
    }
)


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A regex over a short string, with the lower-case literal every match contains ("" if none)."""

    regex: re.Pattern[str]
    gate: str

    def search(self, value: str, lowered: str) -> re.Match[str] | None:
        if self.gate and self.gate not in lowered:
            return None
        return self.regex.search(value)


@dataclass(frozen=True, slots=True)
class _TextRule:
    """A case-sensitive literal in a large text, optionally confirmed by a regex in a window around it."""

    literal: str
    literal_bytes: bytes
    regex: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class _Technology:
    name: str
    categories: tuple[str, ...]
    implies: tuple[str, ...]
    headers: tuple[tuple[str, _Pattern | None], ...]
    meta: tuple[tuple[str, _Pattern], ...]
    script_src: tuple[_Pattern, ...]
    link_href: tuple[_Pattern, ...]
    inline_script: tuple[_TextRule, ...]
    comment: tuple[_TextRule, ...]
    html: tuple[_TextRule, ...]


def _required_literal(pattern: str) -> str:
    """The longest run of literal characters that every match of `pattern` must contain, lower-cased.

    Only the top level counts: characters inside groups or classes, or followed by a quantifier, may be
    absent from a match, and a top-level alternation means no single literal is required at all.
    """
    runs: list[str] = []
    current: list[str] = []
    depth = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        literal: str | None = None
        if c == "\\":
            escaped = pattern[i + 1] if i + 1 < n else ""
            i += 2
            if escaped and not escaped.isalnum() and depth == 0:
                literal = escaped
        elif c == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":
                i += 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            depth -= 1
            i += 1
        elif c == "|":
            if depth == 0:
                return ""
            i += 1
        elif c == "{":
            close = pattern.find("}", i)
            i = n if close < 0 else close + 1
        elif c in ".^$*+?":
            i += 1
        else:
            i += 1
            if depth == 0:
                literal = c
        if literal is not None and not (i < n and pattern[i] in "?*+{"):
            current.append(literal)
            continue
        if current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    best = max(runs, key=len, default="").lower()
    return best if len(best) >= _MIN_GATE else ""


def _pattern(source: str) -> _Pattern:
    return _Pattern(re.compile(source, _FLAGS), _required_literal(source))


def _text_rule(spec: str | Mapping[str, str]) -> _TextRule:
    if isinstance(spec, str):
        return _TextRule(spec, spec.encode(), None)
    literal = spec["literal"]
    regex = spec.get("regex")
    return _TextRule(literal, literal.encode(), re.compile(regex, _FLAGS) if regex else None)


def _patterns(specs: Iterable[str] | str) -> tuple[_Pattern, ...]:
    return tuple(_pattern(s) for s in ([specs] if isinstance(specs, str) else specs))


def _compile(name: str, spec: Mapping[str, Any]) -> _Technology:
    unknown = set(spec) - _RULE_KEYS
    if unknown:
        raise ValueError(f"fingerprint {name!r}: unknown keys {sorted(unknown)}")
    return _Technology(
        name=name,
        categories=tuple(spec.get("categories", ())),
        implies=tuple(spec.get("implies", ())),
        headers=tuple(
            (header.lower(), _pattern(regex) if regex else None)
            for header, regex in spec.get("headers", {}).items()
        ),
        meta=tuple((meta.lower(), _pattern(regex)) for meta, regex in spec.get("meta", {}).items()),
        script_src=_patterns(spec.get("script_src", ())),
        link_href=_patterns(spec.get("link_href", ())),
        inline_script=tuple(_text_rule(s) for s in spec.get("inline_script", ())),
        comment=tuple(_text_rule(s) for s in spec.get("comment", ())),
        html=tuple(_text_rule(s) for s in spec.get("html", ())),
    )


@cache
def fingerprints() -> dict[str, _Technology]:
    """The shipped fingerprints, compiled once per process; raises ValueError on a malformed data file."""
    raw = resources.files("domainscan").joinpath("data/fingerprints.json").read_text(encoding="utf-8")
    techs = {name: _compile(name, spec) for name, spec in json.loads(raw)["technologies"].items()}
    for tech in techs.values():
        missing = [name for name in tech.implies if name not in techs]
        if missing:
            raise ValueError(f"fingerprint {tech.name!r} implies unknown {missing}")
    return techs


def _version(match: re.Match[str]) -> str | None:
    for group in match.groups():
        if group:
            found = _VERSION.match(group)
            if found:
                return found.group()
    return None


def _search_text(rule: _TextRule, text: str) -> re.Match[str] | bool:
    """Whether `rule` holds in `text`: its literal is there and, if it has one, its regex near it."""
    start = text.find(rule.literal)
    if start < 0:
        return False
    if rule.regex is None:
        return True
    for _ in range(_OCCURRENCES):
        window = text[max(0, start - _WINDOW) : start + len(rule.literal) + _WINDOW]
        match = rule.regex.search(window)
        if match:
            return match
        start = text.find(rule.literal, start + 1)
        if start < 0:
            break
    return False


def _search_bytes(rule: _TextRule, data: bytes) -> re.Match[str] | bool:
    """`_search_text` over the raw document, decoding only the windows the regex needs."""
    start = data.find(rule.literal_bytes)
    if start < 0:
        return False
    if rule.regex is None:
        return True
    for _ in range(_OCCURRENCES):
        window = data[max(0, start - _WINDOW) : start + len(rule.literal_bytes) + _WINDOW]
        match = rule.regex.search(window.decode("utf-8", "replace"))
        if match:
            return match
        start = data.find(rule.literal_bytes, start + 1)
        if start < 0:
            break
    return False


class _Evidence:
    """What the rules of one technology found: whether it matched, and the best version seen."""

    __slots__ = ("found", "version")

    def __init__(self) -> None:
        self.found = False
        self.version: str | None = None

    def add(self, match: re.Match[str] | bool | None) -> None:
        if not match:
            return
        self.found = True
        if isinstance(match, bool):
            return
        version = _version(match)
        if version is None:
            return
        if self.version is None or version.startswith(self.version + "."):
            self.version = version


def detect(
    *,
    headers: Mapping[str, str] | None = None,
    meta: Mapping[str, Sequence[str]] | None = None,
    script_srcs: Sequence[str] = (),
    link_hrefs: Sequence[str] = (),
    inline_scripts: Sequence[str] = (),
    comments: Sequence[str] = (),
    html: bytes = b"",
) -> list[TechHit]:
    """The technologies evident from one page, sorted by name, one hit per name.

    `headers` have lower-case names; `meta` maps lower-case meta names to every content given for them
    (a page may carry several generators); `html` is the document as UTF-8 bytes, searched only for the
    literals of document rules. Implied technologies (WordPress implies PHP) are added without a version.
    """
    headers = headers or {}
    meta = meta or {}
    srcs = [(s, s.lower()) for s in script_srcs]
    hrefs = [(h, h.lower()) for h in link_hrefs]
    src_blob = "\n".join(lowered for _, lowered in srcs)
    href_blob = "\n".join(lowered for _, lowered in hrefs)
    metas = {name: [(v, v.lower()) for v in values] for name, values in meta.items()}
    scripts = "\n".join(inline_scripts)
    notes = "\n".join(comments)
    techs = fingerprints()
    hits: dict[str, str | None] = {}
    for tech in techs.values():
        ev = _Evidence()
        for name, pattern in tech.meta:
            for value, lowered in metas.get(name, ()):
                ev.add(pattern.search(value, lowered))
        for name, maybe in tech.headers:
            header = headers.get(name)
            if header is not None:
                ev.add(True if maybe is None else maybe.search(header, header.lower()))
        for pattern in tech.script_src:
            if pattern.gate in src_blob:
                for value, lowered in srcs:
                    ev.add(pattern.search(value, lowered))
        for pattern in tech.link_href:
            if pattern.gate in href_blob:
                for value, lowered in hrefs:
                    ev.add(pattern.search(value, lowered))
        for rule in tech.inline_script:
            ev.add(_search_text(rule, scripts))
        for rule in tech.comment:
            ev.add(_search_text(rule, notes))
        for rule in tech.html:
            ev.add(_search_bytes(rule, html))
        if ev.found:
            hits[tech.name] = ev.version
    pending = [implied for name in hits for implied in techs[name].implies]
    while pending:
        name = pending.pop()
        if name not in hits:
            hits[name] = None
            pending.extend(techs[name].implies)
    return [TechHit(name, hits[name], techs[name].categories) for name in sorted(hits)]
