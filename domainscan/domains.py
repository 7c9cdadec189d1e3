"""Turn one raw input (a domain, a URL, a line of a list) into the Target that is scanned and stored.

The normalized domain is the storage key, so two spellings of one site must give the same key:
``https://WWW.Example.com/about`` and ``example.com.`` both become ``example.com``. Anything that is not a
public web site (an IP address, a single label such as ``localhost``, a bare public suffix of the
list's ICANN section such as ``co.uk``) is rejected here with a one-line reason, before any network
I/O, so that it becomes an ``invalid_domain`` record instead of a confusing DNS or connect error.

Choices worth knowing:

* A leading ``www.`` is removed, repeatedly (so the result is stable when fed back in), but never when
  what remains would be a bare public suffix: ``www.co.uk`` stays ``www.co.uk``.
* A port is part of the key (``example.com:8443``), except the scheme's own default: ``https://x.com:443``
  and ``http://x.com:80`` are just ``x.com``. Without a scheme the port is kept as written, since it then
  says which port to try.
* IDNs are converted with UTS46 mapping, non-transitional (as browsers do): ``Bücher.de`` becomes
  ``xn--bcher-kva.de`` and ``faß.de`` keeps its ß.

Pure: no I/O, and nothing but :class:`InvalidDomain` escapes :func:`normalize` for any string.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from domainscan.errors import InvalidDomain
from domainscan.models import Target
from domainscan.suffixes import is_public_suffix

__all__ = ["normalize"]

MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
# Host text longer than this is refused before the IDNA mapping; UTS46 can drop ignored characters, so
# the raw host may be somewhat longer than the final 253, but not by this much in any real input.
_MAX_RAW_HOST = 1024
_SHOWN = 80

_WEB_SCHEMES = {"http": 80, "https": 443}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# After "name:", digits up to the end of the authority are a port ("localhost:8080/x"), not a scheme.
_PORT_AHEAD = re.compile(r"[0-9]*(?:[/?#\\]|$)")
_AUTHORITY_END = re.compile(r"[/?#\\]")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_LABEL_CHAR = re.compile(r"[^a-z0-9-]")
# What resolvers read as an IPv4 number part: decimal, octal (leading 0) or hexadecimal.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


def _show(text: str) -> str:
    """Quote input for a one-line message: repr escapes control characters, long input is cut."""
    quoted = repr(text)
    return quoted if len(quoted) <= _SHOWN else quoted[: _SHOWN - 3] + "..."


def _split_url(text: str) -> tuple[str | None, str]:
    """Return (lower-case scheme or None, the authority: userinfo@host:port) of a URL or bare name."""
    scheme = None
    rest = text
    match = _SCHEME.match(text)
    if match:
        after = text[match.end() :]
        # "example.com:8080" and "localhost:8080" are host:port; "mailto:x@y.z" is a scheme.
        if after.startswith("//") or ("." not in match[1] and not _PORT_AHEAD.match(after)):
            scheme = match[1].lower()
            rest = after
            if scheme not in _WEB_SCHEMES:
                raise InvalidDomain(f"unsupported scheme {_show(scheme)}: only http and https are scanned")
    rest = rest.removeprefix("//")
    end = _AUTHORITY_END.search(rest)
    authority = rest[: end.start()] if end else rest
    return scheme, authority.rpartition("@")[2]


def _ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _split_port(authority: str, scheme: str | None) -> tuple[str, int | None]:
    """Split host and port; refuse IPv6 literals and ports outside 1-65535."""
    if authority.startswith("["):
        literal = authority[1:].partition("]")[0]
        if _ip_literal(literal):
            raise InvalidDomain(f"IP addresses are not domains: {literal[:_SHOWN]}")
        raise InvalidDomain(f"invalid IPv6 address: {_show(authority)}")
    if authority.count(":") > 1 and _ip_literal(authority):
        raise InvalidDomain(f"IP addresses are not domains: {authority[:_SHOWN]}")
    host, _, port_text = authority.partition(":")
    if not port_text:  # "example.com:" has an empty port, which URLs allow and mean the default
        return host, None
    if not (len(port_text) <= 5 and port_text.isascii() and port_text.isdigit()):
        raise InvalidDomain(f"invalid port {_show(port_text)}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InvalidDomain(f"invalid port {port}: must be 1-65535")
    if scheme is not None and port == _WEB_SCHEMES[scheme]:
        return host, None
    return host, port


def _to_ascii(host: str) -> str:
    """Map an internationalized host to its punycode form (UTS46, non-transitional)."""
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        return ".".join(
            label if label.isascii() else idna.alabel(label).decode("ascii") for label in mapped.split(".")
        )
    except UnicodeError as exc:  # idna.IDNAError and its subclasses, codec errors on odd code points
        raise InvalidDomain(f"invalid internationalized name {_show(host)}: {str(exc)[:_SHOWN]}") from None


def _label_problem(name: str, labels: list[str]) -> str:
    """Say why a name that failed the host name pattern is invalid, naming the first bad label."""
    for label in labels:
        if not label:
            return f"empty label in {_show(name)}"
        if len(label) > MAX_LABEL_LENGTH:
            return f"label too long ({len(label)} > {MAX_LABEL_LENGTH}): {_show(label)}"
        bad = _LABEL_CHAR.search(label)
        if bad:
            return f"invalid character {bad[0]!r} in {_show(name)}"
        if label.startswith("-") or label.endswith("-"):
            return f"label starts or ends with a hyphen: {_show(label)}"
    return f"invalid domain name {_show(name)}"


def _check_name(name: str) -> None:
    """Raise InvalidDomain unless `name` (lower-case ASCII, no trailing dot) is a public host name."""
    labels = name.split(".")
    # Resolvers read "127.1", "0x7f.0.0.1" and "2130706433" as IPv4 addresses; a numeric last label
    # is never a top-level domain.
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        if len(labels) <= 4 and all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
            raise InvalidDomain(f"IP addresses are not domains: {name[:_SHOWN]}")
        raise InvalidDomain(f"the top-level domain cannot be numeric: {_show(name)}")
    if not _HOSTNAME.fullmatch(name):
        raise InvalidDomain(_label_problem(name, labels))
    if len(labels) == 1:
        raise InvalidDomain(f"{_show(name)} has no dot: a single label is not a public site")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidDomain(f"domain name too long ({len(name)} > {MAX_NAME_LENGTH}): {_show(name)}")
    if "xn--" in name:  # punycode given as input, or next to Unicode labels, must decode
        for label in labels:
            if label.startswith("xn--"):
                try:
                    idna.ulabel(label)
                except UnicodeError:
                    raise InvalidDomain(f"invalid punycode label {_show(label)}") from None


def normalize(raw: str, *, line: int | None = None, source: str | None = None) -> Target:
    """Normalize one input into a Target, or raise InvalidDomain with a one-line reason.

    `raw` may be a bare domain, a URL (http or https) or a protocol-relative ``//host``; `line` and
    `source` are carried into the Target so a result can be traced back to its input.
    """
    text = raw.strip()
    if not text:
        raise InvalidDomain("empty input")
    scheme, authority = _split_url(text)
    host, port = _split_port(authority, scheme)
    if len(host) > _MAX_RAW_HOST:
        raise InvalidDomain(f"domain name too long ({len(host)} > {MAX_NAME_LENGTH}): {_show(host)}")
    name = (host if host.isascii() else _to_ascii(host)).lower().removesuffix(".")
    if not name:
        raise InvalidDomain(f"no domain name in {_show(text)}")
    _check_name(name)
    while name.startswith("www.") and not is_public_suffix(name[4:]):
        name = name[4:]
    if is_public_suffix(name):
        raise InvalidDomain(f"{_show(name)} is a public suffix, not a site")
    domain = name if port is None else f"{name}:{port}"
    return Target(domain=domain, host=name, port=port, input=raw, line=line, source=source)
