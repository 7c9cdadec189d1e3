"""normalize(): every accepted spelling maps to one key, every rejection says why in one line."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domainscan.domains import normalize
from domainscan.errors import InvalidDomain
from domainscan.models import Target

VALID = [
    # (input, domain, host, port)
    pytest.param("example.com", "example.com", "example.com", None, id="bare"),
    pytest.param("  Example.COM.\t", "example.com", "example.com", None, id="case-space-trailing-dot"),
    pytest.param(
        "https://user:pw@Example.COM:8443/a?b#c", "example.com:8443", "example.com", 8443, id="full-url"
    ),
    pytest.param("http://example.com", "example.com", "example.com", None, id="http"),
    pytest.param("HTTPS://EXAMPLE.COM/", "example.com", "example.com", None, id="upper-scheme"),
    pytest.param("http:example.com", "example.com", "example.com", None, id="scheme-without-slashes"),
    pytest.param("example.com/path/to?q=1", "example.com", "example.com", None, id="bare-with-path"),
    pytest.param("example.com?q=1", "example.com", "example.com", None, id="bare-with-query"),
    pytest.param("example.com#top", "example.com", "example.com", None, id="bare-with-fragment"),
    pytest.param("//example.com/x", "example.com", "example.com", None, id="protocol-relative"),
    pytest.param("www.example.com", "example.com", "example.com", None, id="www-removed"),
    pytest.param("https://WWW.Example.com/about", "example.com", "example.com", None, id="www-in-url"),
    pytest.param("www.www.example.com", "example.com", "example.com", None, id="www-twice"),
    pytest.param("www.co.uk", "www.co.uk", "www.co.uk", None, id="www-kept-before-suffix"),
    pytest.param("www.com", "www.com", "www.com", None, id="www-kept-before-tld"),
    pytest.param("blog.example.co.uk", "blog.example.co.uk", "blog.example.co.uk", None, id="subdomain"),
    # Suffixes of the list's private section are sites of their own (GitHub Pages', Blogger's homes).
    pytest.param("github.io", "github.io", "github.io", None, id="private-suffix-is-a-site"),
    pytest.param("www.blogspot.com", "blogspot.com", "blogspot.com", None, id="www-before-private-suffix"),
    pytest.param("someone.github.io", "someone.github.io", "someone.github.io", None, id="below-private"),
    pytest.param("site-00001.test", "site-00001.test", "site-00001.test", None, id="unknown-tld"),
    pytest.param("a-b.c-d.org", "a-b.c-d.org", "a-b.c-d.org", None, id="inner-hyphens"),
    pytest.param("123.com", "123.com", "123.com", None, id="numeric-label-not-last"),
    pytest.param("example.com:8080", "example.com:8080", "example.com", 8080, id="port-no-scheme"),
    pytest.param("example.com:443", "example.com:443", "example.com", 443, id="443-kept-without-scheme"),
    pytest.param("example.com:", "example.com", "example.com", None, id="empty-port"),
    pytest.param("https://example.com:443/", "example.com", "example.com", None, id="https-443-dropped"),
    pytest.param("http://example.com:80", "example.com", "example.com", None, id="http-80-dropped"),
    pytest.param("https://example.com:80", "example.com:80", "example.com", 80, id="https-80-kept"),
    pytest.param("http://example.com:443", "example.com:443", "example.com", 443, id="http-443-kept"),
    pytest.param("https://example.com:65535", "example.com:65535", "example.com", 65535, id="max-port"),
    pytest.param("Bücher.de", "xn--bcher-kva.de", "xn--bcher-kva.de", None, id="idn"),
    pytest.param("https://www.münchen.de/", "xn--mnchen-3ya.de", "xn--mnchen-3ya.de", None, id="idn-url"),
    pytest.param("faß.de", "xn--fa-hia.de", "xn--fa-hia.de", None, id="idn-nontransitional-sharp-s"),
    pytest.param("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com", "example.com", None, id="full-width"),
    pytest.param("example。com", "example.com", "example.com", None, id="ideographic-dot"),
    pytest.param("пример.рф", "xn--e1afmkfd.xn--p1ai", "xn--e1afmkfd.xn--p1ai", None, id="idn-tld"),
    pytest.param("XN--BCHER-KVA.DE", "xn--bcher-kva.de", "xn--bcher-kva.de", None, id="punycode-kept"),
    pytest.param("a" * 63 + ".com", "a" * 63 + ".com", "a" * 63 + ".com", None, id="label-63"),
]


@pytest.mark.parametrize(("raw", "domain", "host", "port"), VALID)
def test_valid(raw: str, domain: str, host: str, port: int | None) -> None:
    target = normalize(raw, line=7, source="list.txt")
    assert target == Target(domain=domain, host=host, port=port, input=raw, line=7, source="list.txt")


def test_253_characters_is_the_limit() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57, "com"])  # 253 characters
    assert normalize(name).domain == name
    with pytest.raises(InvalidDomain, match=r"domain name too long \(254 > 253\)"):
        normalize(name.replace("d" * 57, "d" * 58))


INVALID = [
    # (input, a fragment of the reason)
    pytest.param("", "empty input", id="empty"),
    pytest.param(" \t\r\n", "empty input", id="whitespace"),
    pytest.param("https://", "no domain name", id="scheme-only"),
    pytest.param("https:///example.com", "no domain name", id="three-slashes"),
    pytest.param(".", "no domain name", id="dot"),
    pytest.param("ftp://x.com", "unsupported scheme 'ftp'", id="ftp"),
    pytest.param("mailto:info@example.com", "unsupported scheme 'mailto'", id="mailto"),
    pytest.param("javascript:alert(1)", "unsupported scheme 'javascript'", id="javascript"),
    pytest.param("10.0.0.1", "IP addresses are not domains: 10.0.0.1", id="ipv4"),
    pytest.param("http://10.0.0.1:8080/x", "IP addresses are not domains: 10.0.0.1", id="ipv4-url"),
    pytest.param("127.1", "IP addresses are not domains", id="ipv4-short"),
    pytest.param("0x7f.0.0.1", "IP addresses are not domains", id="ipv4-hex"),
    pytest.param("0177.0.0.1", "IP addresses are not domains", id="ipv4-octal"),
    pytest.param("2130706433", "IP addresses are not domains", id="ipv4-decimal"),
    pytest.param("１２７．０．０．１", "IP addresses are not domains: 127.0.0.1", id="ipv4-full-width"),
    pytest.param("[::1]", "IP addresses are not domains: ::1", id="ipv6"),
    pytest.param("http://[2001:db8::1]:8080/", "IP addresses are not domains: 2001:db8::1", id="ipv6-url"),
    pytest.param("2001:db8::1", "IP addresses are not domains", id="ipv6-bare"),
    pytest.param("[not-an-ip]", "invalid IPv6 address", id="bad-brackets"),
    pytest.param("1.2.3.4.5", "top-level domain cannot be numeric", id="numeric-tld"),
    pytest.param("a..b.com", "empty label in 'a..b.com'", id="empty-label"),
    pytest.param(".example.com", "empty label", id="leading-dot"),
    pytest.param("example.com..", "empty label", id="two-trailing-dots"),
    pytest.param("a" * 70 + ".com", "label too long (70 > 63)", id="long-label"),
    pytest.param("ü" * 70 + ".com", "Label too long", id="long-idn-label"),
    pytest.param("-example.com", "label starts or ends with a hyphen: '-example'", id="leading-hyphen"),
    pytest.param("example-.com", "starts or ends with a hyphen", id="trailing-hyphen"),
    pytest.param("_dmarc.example.com", "invalid character '_'", id="underscore"),
    pytest.param("exa mple.com", "invalid character ' '", id="inner-space"),
    pytest.param("exa$mple.com", "invalid character '$'", id="dollar"),
    pytest.param("a\x00b.com", r"invalid character '\x00'", id="nul"),
    pytest.param("☃.com", "invalid internationalized name", id="disallowed-symbol"),
    pytest.param("ü_x.com", "invalid internationalized name", id="idn-underscore"),
    pytest.param("xn--zz.com", "invalid punycode label 'xn--zz'", id="bad-punycode"),
    pytest.param("bücher.xn--0", "invalid punycode label 'xn--0'", id="bad-punycode-next-to-idn"),
    pytest.param("localhost", "'localhost' has no dot", id="localhost"),
    pytest.param("http://intranet/", "'intranet' has no dot", id="intranet"),
    pytest.param("www", "'www' has no dot", id="www-alone"),
    pytest.param("www.", "'www' has no dot", id="www-dot"),
    pytest.param("com", "'com' has no dot", id="tld"),
    pytest.param("test", "'test' has no dot", id="unknown-tld-alone"),
    pytest.param("co.uk", "'co.uk' is a public suffix, not a site", id="public-suffix"),
    pytest.param("https://CO.UK/", "'co.uk' is a public suffix", id="public-suffix-url"),
    pytest.param("pvt.k12.ma.us", "'pvt.k12.ma.us' is a public suffix", id="public-suffix-deep"),
    pytest.param("example.com:0", "invalid port 0", id="port-0"),
    pytest.param("example.com:65536", "invalid port 65536", id="port-too-big"),
    pytest.param("example.com:123456", "invalid port '123456'", id="port-too-long"),
    pytest.param("example.com:http", "invalid port 'http'", id="port-word"),
    pytest.param("example.com:-1", "invalid port '-1'", id="port-negative"),
    pytest.param("example.com:٣", "invalid port", id="port-non-ascii-digit"),
    pytest.param("a" * 2000 + ".com", "domain name too long", id="huge"),
]


@pytest.mark.parametrize(("raw", "reason"), INVALID)
def test_invalid(raw: str, reason: str) -> None:
    with pytest.raises(InvalidDomain) as caught:
        normalize(raw)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_reason_echoes_at_most_about_80_characters_of_input() -> None:
    with pytest.raises(InvalidDomain) as caught:
        normalize("a" * 500 + ".." + "b" * 500 + ".com")
    assert len(caught.value.reason) < 120
    assert "..." in caught.value.reason


@given(st.text())
@example("\ud800.com")
@example("[")
@example("http://[::1")
@example("a:" + "9" * 5000)
@example("www.\u00ad.com")
@example("À.XN--0")
def test_never_raises_anything_but_invalid_domain(raw: str) -> None:
    try:
        target = normalize(raw)
    except InvalidDomain as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        assert "\n" not in reason
        return
    assert target.domain.isascii()
    assert target.domain == target.domain.lower()
    assert normalize(target.domain).domain == target.domain


DOMAINISH = st.from_regex(
    r"\A(https?://)?(www\.)?[a-zA-Zäöüß0-9-]{1,12}(\.[a-zA-Zé0-9-]{1,8}){1,3}(:[0-9]{1,5})?/?\Z"
)


@given(DOMAINISH)
def test_normalizing_a_key_again_gives_the_same_key(raw: str) -> None:
    try:
        target = normalize(raw)
    except InvalidDomain:
        return
    again = normalize(target.domain)
    assert (again.domain, again.host, again.port) == (target.domain, target.host, target.port)
