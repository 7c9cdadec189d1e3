"""Web URLs found in pages and sitemaps, resolved the one way both read them; pure.

A homepage's ``href`` values and a sitemap's ``<loc>`` or ``Sitemap:`` lines are written by strangers:
relative, padded with whitespace, broken (``http://[::1``), or not web addresses at all
(``javascript:``, ``data:``, ``mailto:``). Both :mod:`domainscan.extract` and :mod:`domainscan.sitemaps`
need only the ones a user could visit, made absolute.
"""

from __future__ import annotations

from urllib.parse import urljoin

__all__ = ["web_url"]

_WEB_SCHEMES = ("http://", "https://")


def web_url(base: str, href: str | None, *, fragment: bool = True) -> str | None:
    """`href` resolved against `base`, if that gives an http(s) URL; None for empty, broken,
    ``javascript:``, ``data:`` and the like (they are no address a user can visit).

    With `fragment` False the ``#...`` part is dropped: two sitemap URLs that differ only there are one
    file to fetch.
    """
    if href is None:
        return None
    href = href.strip()
    if not href:
        return None
    try:
        url = urljoin(base, href)
    except ValueError:
        return None
    if not url[:8].lower().startswith(_WEB_SCHEMES):
        return None
    return url if fragment else url.partition("#")[0]
