"""Social profiles a page links to: which platform a URL belongs to, and whether it is a profile.

Why a module of its own: telling ``facebook.com/acme`` from ``facebook.com/sharer.php`` is a table per
platform (hosts, locale subdomains, the path segments that are actions or single posts rather than
someone's profile) that grows on its own schedule, apart from how the page is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# A cheap test for the tree walk, so only hrefs that may be profiles are kept for :func:`profile_platform`.
PROFILE_HINT = re.compile(
    r"facebook\.com|fb\.com|twitter\.com|x\.com|linkedin\.com|instagram\.com|youtube\.com|tiktok\.com"
    r"|github\.com|pinterest\.",
    re.IGNORECASE,
)

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


def profile_platform(url: str) -> str | None:
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


def profiles(links: Iterable[str], same_as: Iterable[str]) -> dict[str, str]:
    """One profile URL per platform: the first link to it on the page, else the first JSON-LD
    ``sameAs`` naming it. `links` are absolute URLs; anything that is no profile is passed over."""
    found: dict[str, str] = {}
    for url in links:
        name = profile_platform(url)
        if name and name not in found:
            found[name] = url
    from_links = set(found)
    for url in same_as:
        name = profile_platform(url)
        if name and name not in from_links and name not in found:
            found[name] = url
    return found
