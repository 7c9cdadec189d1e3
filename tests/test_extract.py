"""Page facts from HTML bytes: fixture pages, tricky contacts, encodings, hostile shapes, the webfarm."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from farm import WEBFARM, unavailable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domainscan.extract import extract, phone_region_for
from domainscan.models import PageFacts, ScanResult

PAGES = Path(__file__).parent / "fixtures" / "pages"
HEADERS = {"server": "nginx/1.22.1", "content-type": "text/html; charset=utf-8"}


def page(name: str, url: str, **kwargs: Any) -> PageFacts:
    return extract((PAGES / f"{name}.html").read_bytes(), url, HEADERS, **kwargs)


def html(body: str, head: str = "", url: str = "https://example.com/", **kwargs: Any) -> PageFacts:
    doc = f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>"
    return extract(doc.encode(), url, {}, **kwargs)


def tech(facts: PageFacts) -> dict[str, str | None]:
    return {hit.name: hit.version for hit in facts.tech}


# -- fixture pages ----------------------------------------------------------------------------------------


def test_wordpress_page() -> None:
    facts = page("wordpress", "https://harbordental.com/")
    assert facts.title == "Harbor Dental & Care – Family dentistry in Seattle"
    assert facts.description == "Gentle family dentistry in Seattle since 1984."
    assert facts.language == "en-US"
    assert facts.canonical_url == "https://harbordental.com/"
    assert facts.favicon_url == "https://harbordental.com/wp-content/uploads/2023/05/cropped-tooth-32x32.png"
    assert facts.logo_url == "https://harbordental.com/wp-content/uploads/2023/05/harbor-logo.png"
    assert facts.open_graph == {
        "locale": "en_US",
        "type": "website",
        "title": "Harbor Dental & Care",
        "url": "https://harbordental.com/",
    }
    assert facts.twitter == {"card": "summary_large_image"}
    assert facts.emails == ["front.desk@harbordental.com"]
    assert facts.phones == ["+12065550143"]
    assert facts.social == {
        "facebook": "https://www.facebook.com/harbordentalseattle/",
        "instagram": "https://www.instagram.com/harbordental/",
    }
    assert tech(facts) == {
        "Elementor": "3.18.2",
        "Google Font API": None,
        "Google Tag Manager": None,
        "MySQL": None,
        "Nginx": "1.22.1",
        "PHP": None,
        "WordPress": "6.4.2",
        "Yoast SEO": "21.7",
        "jQuery": "3.7.1",
    }
    # noscript text is not page text; the links in it are still links
    assert facts.page.to_dict() == {"images": 1, "scripts": 5, "stylesheets": 4, "links": 8, "words": 40}
    record = ScanResult(
        domain="harbordental.com", input="harbordental.com", tenant="t", scanned_at="now", facts=facts
    ).to_record()
    assert (record["is_wordpress"], record["wordpress_version"], record["has_elementor"]) == (
        True,
        "6.4.2",
        True,
    )


def test_shopify_page() -> None:
    facts = page("shopify", "https://loja-aurora.com.br/")
    assert facts.title == "Loja Aurora – Moda sustentável"
    assert facts.language == "pt-BR"
    assert facts.favicon_url == "https://loja-aurora.com.br/cdn/shop/files/favicon_32x32.png?v=1700000000"
    assert facts.logo_url == "https://loja-aurora.com.br/cdn/shop/files/logo.png"  # JSON-LD ImageObject
    assert facts.open_graph["title"] == "Loja Aurora – Moda sustentável"  # the first og:title wins
    assert facts.twitter == {"site": "@lojaaurora", "card": "summary_large_image"}
    assert facts.json_ld_types == ["Organization"]
    assert facts.emails == ["contato@loja-aurora.com.br"]
    assert facts.phones == ["+551134567890"]  # a national number in JSON-LD, read in the .br region
    # the <a> link wins for Instagram; TikTok only appears in JSON-LD sameAs
    assert facts.social == {
        "instagram": "https://www.instagram.com/lojaaurora/",
        "tiktok": "https://www.tiktok.com/@lojaaurora",
    }
    assert set(tech(facts)) == {"Facebook Pixel", "Hotjar", "Nginx", "Shopify"}


def test_structured_data_page() -> None:
    facts = page("structured", "https://zephyrlegal.co.uk/")
    assert facts.description == "Business law for small companies."  # og:description as the fallback
    assert facts.open_graph == {
        "description": "Business law for small companies.",
        "site_name": "Zephyr Legal",
    }
    assert facts.twitter == {"title": "Zephyr Legal", "creator": "@zephyrlegal"}
    # @graph items, a top-level list, schema.org URLs shortened, a comment-wrapped block; not the broken one
    assert facts.json_ld_types == [
        "WebSite",
        "LegalService",
        "LocalBusiness",
        "WebPage",
        "BreadcrumbList",
        "FAQPage",
        "Service",
    ]
    assert facts.logo_url == "https://zephyrlegal.co.uk/media/zephyr-logo.svg"
    assert facts.phones == ["+442079460958"]  # nested in contactPoint, national format, .uk -> GB
    assert facts.social == {
        "linkedin": "https://www.linkedin.com/company/zephyr-legal",
        "github": "https://github.com/zephyrlegal",
    }
    assert facts.language is None


def test_contacts_page_keeps_real_addresses_and_numbers_only() -> None:
    facts = page("contacts", "https://beispiel-firma.de/kontakt")
    assert facts.emails == [
        "info@beispiel-firma.de",
        "presse@beispiel-firma.de",
        "vertrieb@beispiel-firma.de",
    ]
    assert facts.phones == ["+18015457915", "+442079460958", "+4930901820", "+493090182222"]


def test_relative_urls_resolve_against_base_href() -> None:
    facts = page("relative", "https://petit-atelier.fr/fr/accueil")
    assert facts.title == "Le Petit Atelier"  # folded; the <svg><title> is not the page title
    assert facts.language == "fr"
    assert facts.description == "Ateliers de céramique à Lyon."  # an empty description falls back to og
    assert facts.canonical_url == "https://cdn.example.net/home/"
    assert facts.favicon_url == "https://cdn.example.net/site/touch.png"  # apple-touch-icon as the fallback
    assert facts.logo_url == "https://cdn.example.net/site/img/logo.webp"
    assert facts.social == {"facebook": "https://www.facebook.com/petitatelierlyon"}
    assert facts.page.words == 8


def test_sitemap_links_resolve_against_base_href_once_each() -> None:
    html = (
        b'<html><head><base href="https://cdn.example.net/site/">'
        b'<link rel="sitemap" type="application/xml" href="sitemap.xml">'
        b'<link rel="Sitemap" href="sitemap.xml#again">'
        b'<link rel="alternate sitemap" href="https://example.com/news.xml">'
        b'<link rel="sitemap" href="javascript:void(0)"><link rel="stylesheet" href="s.css">'
        b"</head></html>"
    )
    facts = extract(html, "https://example.com/", {})
    assert facts.sitemap_links == ["https://cdn.example.net/site/sitemap.xml", "https://example.com/news.xml"]
    assert (
        "sitemap_links"
        not in ScanResult(domain="x", input="x", tenant="t", scanned_at="", facts=facts).to_record()
    )


def test_share_links_and_homepages_are_not_profiles() -> None:
    facts = page("social", "https://timberworks.com/")
    assert facts.social == {
        "facebook": "https://www.facebook.com/timberworks",
        "x": "https://twitter.com/timberworks",  # twitter.com and x.com are one platform; the first wins
        "linkedin": "https://www.linkedin.com/company/timber-works/",
        "youtube": "https://www.youtube.com/@timberworks",
        "instagram": "https://www.instagram.com/timberworks/",
        "tiktok": "https://www.tiktok.com/@timberworks",
        "pinterest": "https://uk.pinterest.com/timberworks/",
        "github": "https://github.com/timberworks",  # from JSON-LD sameAs: no <a> for it
    }


# -- field by field ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "emails"),
    [
        ('<a href="mailto:Sales@Example.COM">x</a>', ["sales@example.com"]),
        ('<a href="mailto:info@example.com?subject=Hello%20there">x</a>', ["info@example.com"]),
        ('<a href="mailto:a%40example.org,b@example.org">x</a>', ["a@example.org", "b@example.org"]),
        ("<p>Mail us: hello@example.co.uk.</p>", ["hello@example.co.uk"]),
        (
            "<p>first@example.com, first@example.com and second@example.net</p>",
            ["first@example.com", "second@example.net"],
        ),
        ('<img src="/logo@2x.png"><p>logo@2x.png icon@3x.webp sprite@1.5x.jpg</p>', []),
        ("<p>foo@bar a@b.c user@localhost x@y.z.invalidtld123 me@site.test</p>", []),
        ("<p>name@example.com123 and ..@example.com</p>", []),
        ("<script>var e = 'js@example.com';</script><style>/* css@example.com */</style>", []),
        ("<!-- hidden@example.com --><noscript>ns@example.com</noscript>", []),
    ],
)
def test_emails(body: str, emails: list[str]) -> None:
    assert html(body).emails == emails


@pytest.mark.parametrize(
    ("body", "url", "phones"),
    [
        ('<a href="tel:+18015457915">call</a>', "https://example.com/", ["+18015457915"]),
        ('<a href="tel:+1%20(801)%20545-7915">call</a>', "https://example.com/", ["+18015457915"]),
        ("<p>Call +44 20 7946 0958 today</p>", "https://example.com/", ["+442079460958"]),
        ("<p>Call (020) 7946 0958</p>", "https://example.co.uk/", ["+442079460958"]),
        ("<p>Call (212) 555-0182</p>", "https://example.com/", []),  # no region for .com: ambiguous
        ('<a href="tel:(212) 555-0182">x</a>', "https://example.us/", ["+12125550182"]),
        ("<p>Version 1.2.3.4 build 2026-01-01</p>", "https://example.de/", []),
        ("<p>Since 1999. Order 123456789. 2026-01-01 12:30</p>", "https://example.de/", []),
        ("<p>+1 (801) 545-7915</p>", "https://example.de/", ["+18015457915"]),  # "(801)" is no German number
        ("<p>C++ 2026 and (100) points</p>", "https://example.de/", []),
        ("<p>+1 555 000</p>", "https://example.com/", []),  # phone-shaped but not a valid number
        ("<script>var t = '+49 30 901820';</script>", "https://example.com/", []),
    ],
)
def test_phones(body: str, url: str, phones: list[str]) -> None:
    assert html(body, url=url).phones == phones


def test_phone_region_argument_overrides_the_tld() -> None:
    assert html("<p>Ruf an: (030) 901820</p>", url="https://example.com/", phone_region="DE").phones == [
        "+4930901820"
    ]


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("example.de", "DE"),
        ("www.example.co.uk", "GB"),
        ("shop.example.fr.", "FR"),
        ("example.com.br", "BR"),
        ("example.com", None),
        ("example.org", None),
        ("example.io", None),
        ("example.co", None),
        ("site-00001.test", None),
        ("localhost", None),
        ("", None),
        ("example.eu", None),
    ],
)
def test_phone_region_for(host: str, region: str | None) -> None:
    assert phone_region_for(host) == region


@pytest.mark.parametrize(
    ("head", "body", "title"),
    [
        ("<title>  A \n\t B &amp; C  </title>", "", "A B & C"),
        ("", "<title>In the body</title><p>x</p>", "In the body"),
        ("<title></title>", "<title>Second</title>", "Second"),
        ("<title>First</title>", "<title>Second</title>", "First"),
        ("", "<svg><title>Icon</title></svg>", None),
    ],
)
def test_title(head: str, body: str, title: str | None) -> None:
    assert html(body, head).title == title


def test_language_falls_back_to_content_language_header() -> None:
    doc = b"<html><head><title>x</title></head></html>"
    assert extract(doc, "https://example.com/", {"content-language": "de-DE, en"}).language == "de-DE"
    assert (
        extract(b'<html lang="pt-br"></html>', "https://e.com/", {"content-language": "de"}).language
        == "pt-br"
    )


def test_favicon_is_never_invented() -> None:
    assert html("<p>x</p>").favicon_url is None
    assert html("", '<link rel="shortcut icon" href="/f.ico">').favicon_url == "https://example.com/f.ico"


def test_logo_from_json_ld_string_and_from_img() -> None:
    ld = '<script type="application/ld+json">{"@type": "Organization", "logo": "/brand.png"}</script>'
    assert html('<img class="header-logo" src="/img.png">', ld).logo_url == "https://example.com/brand.png"
    assert html('<img src="/a.png"><img alt="ACME Logo" src="b.png">').logo_url == "https://example.com/b.png"
    assert html('<img src="/a.png">').logo_url is None


def test_counts() -> None:
    body = (
        '<img src="a"><img src="b"><a href="/1">one two</a><a name="anchor">three</a>'
        "<script>var words = 'not counted';</script><style>p { x: y }</style><p>four  five\nsix</p>"
    )
    head = '<link rel="stylesheet" href="a.css"><link rel="alternate stylesheet" href="b.css">'
    assert html(body, head + '<script src="x.js"></script>').page.to_dict() == {
        "images": 2,
        "scripts": 2,
        "stylesheets": 2,
        "links": 1,
        "words": 6,
    }


# -- encodings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "encoding", "title"),
    [
        (
            '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
            "<title>Привет, мир</title></head></html>".encode("cp1251"),
            None,
            "Привет, мир",
        ),
        ('<meta charset="windows-1251"><title>Привет</title>'.encode("cp1251"), None, "Привет"),
        (
            "<html><head><title>こんにちは世界</title></head><body>テスト</body></html>".encode("shift_jis"),
            "shift_jis",
            "こんにちは世界",
        ),
        (
            b"\xef\xbb\xbf" + "<html><head><title>Café Crème</title></head></html>".encode(),
            None,
            "Café Crème",
        ),
        ("<html><head><title>Café</title></head></html>".encode("utf-16"), None, "Café"),
        (
            '<?xml version="1.0" encoding="iso-8859-1"?><html><title>Café</title></html>'.encode("latin-1"),
            None,
            "Café",
        ),
        # the fetcher's decision wins over a stale meta declaration
        ('<meta charset="iso-8859-1"><title>Größe</title>'.encode(), "utf-8", "Größe"),
        ("<title>Größe</title>".encode(), "no-such-charset", "Größe"),
        ("<title>Größe</title>".encode(), "base64", "Größe"),
        ("<title>Caf\xe9</title>".encode("latin-1"), None, "Caf\ufffd"),  # undeclared: UTF-8 with replacement
    ],
)
def test_encodings(body: bytes, encoding: str | None, title: str) -> None:
    assert extract(body, "https://example.com/", {}, encoding=encoding).title == title


# -- hostile input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"", b"   \n", b"<!-- -->", b"\xef\xbb\xbf"], ids=["empty", "blank", "comment", "bom"]
)
def test_empty_documents_give_empty_facts(body: bytes) -> None:
    assert extract(body, "https://example.com/", {}) == PageFacts()


@pytest.mark.parametrize(
    "body",
    [
        bytes(range(256)) * 64,
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\xff" * 500,
    ],
    ids=["binary", "pdf", "png"],
)
def test_binary_bodies_give_no_facts(body: bytes) -> None:
    facts = extract(body, "https://example.com/", {})
    assert (facts.title, facts.emails, facts.phones, facts.social, facts.tech) == (None, [], [], {}, [])


def test_deep_nesting_is_handled_quickly() -> None:
    doc = (
        "<html><head><title>Deep</title></head><body>"
        + "<div>" * 20000
        + "deep"
        + "</div>" * 20000
        + "</body></html>"
    ).encode()
    started = time.perf_counter()
    facts = extract(doc, "https://example.com/", {})
    assert time.perf_counter() - started < 2
    assert facts.title == "Deep"


def test_fifty_thousand_links_are_handled_quickly() -> None:
    links = "".join(
        f'<a href="/p/{i}">p{i}</a>' if i % 10 else f'<a href="https://www.facebook.com/fan{i}">f</a>'
        for i in range(1, 50001)
    )
    doc = f"<html><head><title>Many Links</title></head><body>{links}</body></html>".encode()
    started = time.perf_counter()
    facts = extract(doc, "https://example.com/", {})
    assert time.perf_counter() - started < 2
    assert facts.social == {"facebook": "https://www.facebook.com/fan10"}
    assert facts.page.links == 50000


def test_long_runs_of_address_characters_stay_linear() -> None:
    body = "<p>" + "a" * 200_000 + "@example.com " + "b." * 50_000 + "@ " + "+1" * 20_000 + "</p>"
    started = time.perf_counter()
    facts = html(body)
    assert time.perf_counter() - started < 2
    assert facts.emails == []


def test_pathological_json_ld_is_ignored() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    head = (
        f'<script type="application/ld+json">{deep}</script>'
        '<script type="application/ld+json">{"@type": "Organization", "n": 1' + "0" * 5000 + "}</script>"
        '<script type="application/ld+json">{"@type": "Store"}</script>'
    )
    assert html("", head).json_ld_types == ["Store"]


HTML_PIECES = st.sampled_from(
    [
        "<html>",
        "<head>",
        "<body>",
        "<title>",
        "</title>",
        "<a href='",
        "mailto:",
        "tel:+1",
        "@",
        "a@b.com",
        "<meta name='description' content='",
        "<meta property='og:x' content='",
        "<base href='",
        "'>",
        ">",
        "<",
        "<script type='application/ld+json'>",
        '{"@type": [',
        '"telephone": "+44 20 7946 0958"',
        "</script>",
        "<link rel='icon' href='",
        "http://[::1",
        "https://facebook.com/x",
        "<img class=logo src=",
        "<!--",
        "-->",
        "<svg>",
        "<noscript>",
        "<template>",
        "&amp;",
        "&#0;",
        "\x00",
        "(212) 555-0182",
        "+",
        "\ufffd",
        "<?xml version='1.0' encoding='utf-16'?>",
        "<meta charset='x-user-defined'>",
        "\xff",
        "</div>" * 3,
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=2048),
    encoding=st.sampled_from([None, "utf-8", "cp1251", "shift_jis", "utf-16", "idna", "bogus"]),
)
def test_extract_never_raises_on_arbitrary_bytes(body: bytes, encoding: str | None) -> None:
    assert isinstance(extract(body, "https://example.de/", {}, encoding=encoding), PageFacts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.one_of(HTML_PIECES, st.text(max_size=20)), max_size=40),
    url=st.sampled_from(["https://example.com/", "http://[::1/", "", "https://x.co.uk/a/b"]),
)
def test_extract_never_raises_on_html_like_input(pieces: list[str], url: str) -> None:
    facts = extract("".join(pieces).encode("utf-8", "surrogatepass"), url, {"content-language": "x"})
    assert all(u.startswith(("http://", "https://")) for u in (facts.favicon_url, facts.canonical_url) if u)


# -- the webfarm ------------------------------------------------------------------------------------------


def _load_scorer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webfarm_score", WEBFARM / "score.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_webfarm_pages_match_their_expected_records(tmp_path: Path) -> None:
    """Generated sites have known answers; compare as the farm's scorer does (score.py canon)."""
    if not (WEBFARM / "sitegen.py").exists():
        unavailable(f"webfarm not found at {WEBFARM}")
    subprocess.run(
        [
            sys.executable,
            str(WEBFARM / "sitegen.py"),
            "--out",
            str(tmp_path),
            "--sites",
            "60",
            "--kb",
            "8",
            "--seed",
            "7",
        ],
        check=True,
        capture_output=True,
    )
    scorer = _load_scorer()
    compared = 0
    for line in (tmp_path / "expected.jsonl").read_text().splitlines():
        expected = json.loads(line)
        if expected["status"] != "ok":
            continue
        host = expected["url"].split("/")[2]
        body = (tmp_path / "sites" / host / "index.html").read_bytes()
        facts = extract(body, expected["url"], {"server": "nginx/1.22.1", "content-type": "text/html"})
        got = {
            "title": facts.title,
            "description": facts.description,
            "language": facts.language,
            "emails": facts.emails,
            "phones": facts.phones,
            "social": facts.social,
            "tech": [hit.to_dict() for hit in facts.tech],
        }
        for field, value in got.items():
            assert scorer.canon(field, value) == scorer.canon(field, expected[field]), (host, field)
        versions = {hit.name: hit.version for hit in facts.tech}
        assert {name: versions.get(name) for name in expected["tech_versions"]} == expected[
            "tech_versions"
        ], host
        compared += 1
    assert compared >= 50


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0ab\xe9\xff\u2003\u3000“")))
def test_the_word_count_splits_where_python_does(text: str) -> None:
    from domainscan.extract import _count_words

    assert _count_words(text) == len(text.split())
