"""JSON-LD (schema.org) blocks read for the few facts PageFacts keeps: types, logo, telephones, sameAs.

Why a module of its own: reading JSON-LD is JSON work, not tree work. CMSs wrap it in comments or CDATA,
nest it in ``@graph`` and hang telephones and profiles anywhere; the rules for that, and the bound on how
much of a hostile block is visited, are the same whatever page the block came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
class JsonLd:
    """What a page's JSON-LD blocks say that PageFacts keeps."""

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


def read(blocks: Iterable[str]) -> JsonLd:
    """Types, an organization's logo, telephones and sameAs links from the ``ld+json`` script
    texts of one page; blocks that are not JSON are skipped, and each is walked for a bounded
    number of values."""
    out = JsonLd()
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
