"""The Public Suffix List, loaded once from the copy shipped in the `publicsuffixlist` package (offline).

Two views:

- `psl()` holds the list's ICANN section only, and treats an unknown TLD as a suffix (so `site.test`
  is a registrable name, which scanning an intranet or a test farm needs). It judges whether an input
  is a site at all. Suffixes of the private section, such as `github.io` or `blogspot.com`, are
  names their owners serve a site on, so they are scanned like any other domain.
- `known_psl()` knows only real suffixes, private ones included, for judging whether text that looks
  like an e-mail address ends in a real top-level domain.
"""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PublicSuffixList


@cache
def psl() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True)


@cache
def known_psl() -> PublicSuffixList:
    return PublicSuffixList(accept_unknown=False)


def is_public_suffix(name: str) -> bool:
    """True for a bare public suffix such as `com` or `co.uk`, which is no site of its own (`github.io`,
    of the list's private section, is one)."""
    return bool(psl().is_public(name))


def has_known_suffix(name: str) -> bool:
    """True when `name` is below a real public suffix (`example.com`, not `x.invalidtld123`)."""
    return known_psl().privatesuffix(name) is not None
