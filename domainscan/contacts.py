"""E-mail addresses and phone numbers recognised in a page's links and text.

Why a module of its own: what counts as a real contact (a valid address below a known public suffix,
not ``logo@2x.png``; a number valid in its numbering plan, read in the region the site's ccTLD
suggests) is policy of its own, with its own libraries (email-validator, phonenumbers), and the
pipeline needs :func:`phone_region_for` without parsing anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from domainscan.suffixes import has_known_suffix

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


def emails(mailtos: Iterable[str], texts: Iterable[str]) -> list[str]:
    """The real addresses in ``mailto:`` hrefs and in text, lower-cased, sorted, without repeats."""
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


def phones(
    tels: Iterable[str], json_ld: Iterable[str], texts: Iterable[str], region: str | None
) -> list[str]:
    """The valid numbers, in E.164, from ``tel:`` hrefs, JSON-LD telephones and text; national
    numbers are read in `region` and only ``+`` numbers are accepted without one."""
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
