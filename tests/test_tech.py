"""Technology detection: each fingerprint on a minimal real-world snippet, versions, and false positives."""

from __future__ import annotations

from typing import Any

import pytest

from domainscan.extract import extract
from domainscan.tech import _required_literal, detect, fingerprints


def names(**evidence: Any) -> set[str]:
    return {hit.name for hit in detect(**evidence)}


def version_of(name: str, **evidence: Any) -> str | None:
    hits = {hit.name: hit for hit in detect(**evidence)}
    assert name in hits, f"{name} not detected in {evidence}"
    return hits[name].version


def on_page(html: str, headers: dict[str, str] | None = None) -> dict[str, str | None]:
    """Technologies (name -> version) that extract() reports for a page, as users see them."""
    facts = extract(html.encode(), "https://example.com/", headers or {})
    return {hit.name: hit.version for hit in facts.tech}


# (technology, evidence given to detect(), expected version)
DETECTED: list[tuple[str, dict[str, Any], str | None]] = [
    ("WordPress", {"meta": {"generator": ["WordPress 6.4.2"]}}, "6.4.2"),
    ("WordPress", {"script_srcs": ["/wp-includes/js/wp-emoji-release.min.js?ver=6.5.3"]}, "6.5.3"),
    ("WordPress", {"link_hrefs": ["/wp-includes/css/dist/block-library/style.min.css?ver=6.3.1"]}, "6.3.1"),
    ("WordPress", {"link_hrefs": ["https://example.com/wp-content/themes/astra/style.css?ver=4.5.2"]}, None),
    ("WordPress", {"headers": {"link": '<https://example.com/wp-json/>; rel="https://api.w.org/"'}}, None),
    (
        "Elementor",
        {"script_srcs": ["/wp-content/plugins/elementor/assets/js/frontend.min.js?ver=3.18.2"]},
        "3.18.2",
    ),
    ("Elementor", {"meta": {"generator": ["Elementor 3.19.0; features: e_dom_optimization"]}}, "3.19.0"),
    (
        "WooCommerce",
        {"script_srcs": ["/wp-content/plugins/woocommerce/assets/js/frontend/cart.min.js?ver=8.5.1"]},
        "8.5.1",
    ),
    ("Shopify", {"script_srcs": ["//cdn.shopify.com/s/files/1/0123/t/4/assets/theme.js?v=1"]}, None),
    ("Shopify", {"inline_scripts": ['Shopify.shop = "demo.myshopify.com";']}, None),
    ("Shopify", {"headers": {"x-shopid": "12345"}}, None),
    ("Wix", {"meta": {"generator": ["Wix.com Website Builder"]}}, None),
    ("Wix", {"headers": {"x-wix-request-id": "1700000000.123"}}, None),
    ("Squarespace", {"comments": [" This is Squarespace. "]}, None),
    (
        "Squarespace",
        {"link_hrefs": ["https://static1.squarespace.com/static/vta/5c5a519771c10ba3470d8101/site.css"]},
        None,
    ),
    ("Drupal", {"meta": {"generator": ["Drupal 9 (https://www.drupal.org)"]}}, "9"),
    ("Drupal", {"script_srcs": ["/core/misc/drupal.js?v=10.2.1"]}, "10.2.1"),
    ("Drupal", {"headers": {"x-generator": "Drupal 7 (http://drupal.org)"}}, "7"),
    ("Joomla", {"meta": {"generator": ["Joomla! - Open Source Content Management"]}}, None),
    ("Joomla", {"meta": {"generator": ["Joomla! 1.5 - Open Source Content Management"]}}, "1.5"),
    ("jQuery", {"script_srcs": ["/assets/js/jquery-3.7.1.min.js"]}, "3.7.1"),
    ("jQuery", {"script_srcs": ["https://code.jquery.com/jquery-1.12.4.js"]}, "1.12.4"),
    ("jQuery", {"script_srcs": ["/wp-includes/js/jquery/jquery.min.js?ver=3.7.1"]}, "3.7.1"),
    (
        "jQuery",
        {"script_srcs": ["https://ajax.googleapis.com/ajax/libs/jquery/3.6.0/jquery.min.js"]},
        "3.6.0",
    ),
    ("jQuery", {"script_srcs": ["/js/jquery.js"]}, None),
    ("React", {"script_srcs": ["/static/js/react.production.min.js"]}, None),
    (
        "React",
        {"script_srcs": ["https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js"]},
        "18.2.0",
    ),
    ("React", {"html": b'<div id="root" data-reactroot=""><p>hi</p></div>'}, None),
    (
        "Vue.js",
        {"script_srcs": ["https://cdn.jsdelivr.net/npm/vue@3.4.21/dist/vue.global.prod.js"]},
        "3.4.21",
    ),
    ("Vue.js", {"script_srcs": ["https://cdnjs.cloudflare.com/ajax/libs/vue/2.7.14/vue.min.js"]}, "2.7.14"),
    ("Vue.js", {"html": b'<div data-v-7ba5bd90 class="card">x</div>'}, None),
    ("Angular", {"html": b'<app-root _nghost-ng-c1 ng-version="17.0.8"></app-root>'}, "17.0.8"),
    ("AngularJS", {"html": b'<html ng-app="shop">'}, None),
    ("Bootstrap", {"link_hrefs": ["/css/bootstrap.min.css?v=5.3.2"]}, "5.3.2"),
    (
        "Bootstrap",
        {"link_hrefs": ["https://cdn.jsdelivr.net/npm/bootstrap@5.3.2/dist/css/bootstrap.min.css"]},
        "5.3.2",
    ),
    (
        "Bootstrap",
        {"script_srcs": ["https://stackpath.bootstrapcdn.com/bootstrap/4.6.2/js/bootstrap.bundle.min.js"]},
        "4.6.2",
    ),
    ("Google Analytics", {"script_srcs": ["https://www.googletagmanager.com/gtag/js?id=G-ABC123XYZ"]}, None),
    ("Google Analytics", {"script_srcs": ["https://www.googletagmanager.com/gtag/js?id=UA-1234567-1"]}, None),
    (
        "Google Analytics",
        {"inline_scripts": ["gtag('js', new Date());\ngtag('config', 'G-ABC123XYZ');"]},
        None,
    ),
    (
        "Google Analytics",
        {
            "inline_scripts": [
                "(function(i,s,o,g,r,a,m){})(window,document,'script',"
                "'https://www.google-analytics.com/analytics.js','ga');"
                "ga('create', 'UA-1234567-1', 'auto');"
            ]
        },
        None,
    ),
    (
        "Google Tag Manager",
        {
            "inline_scripts": [
                "(function(w,d,s,l,i){w[l]=w[l]||[];})(window,document,'script','dataLayer','GTM-K9X2QP');"
            ]
        },
        None,
    ),
    ("Google Tag Manager", {"script_srcs": ["https://www.googletagmanager.com/gtm.js?id=GTM-K9X2QP"]}, None),
    (
        "Facebook Pixel",
        {
            "inline_scripts": [
                "!function(f,b,e,v,n,t,s){}(window,document,'script','https://connect.facebook.net/en_US/fbevents.js');"
                "fbq('init', '123456789');"
            ]
        },
        None,
    ),
    (
        "Hotjar",
        {
            "inline_scripts": [
                "(function(h,o,t,j,a,r){h._hjSettings={hjid:1,hjsv:6};"
                "})(window,document,'https://static.hotjar.com/c/hotjar-','.js?sv=');"
            ]
        },
        None,
    ),
    ("Cloudflare", {"headers": {"cf-ray": "8a1b2c3d4e5f6a7b-AMS"}}, None),
    ("Cloudflare", {"headers": {"server": "cloudflare"}}, None),
    ("Nginx", {"headers": {"server": "nginx/1.22.1"}}, "1.22.1"),
    ("Nginx", {"headers": {"server": "nginx"}}, None),
    ("Apache", {"headers": {"server": "Apache/2.4.57 (Debian)"}}, "2.4.57"),
    ("PHP", {"headers": {"x-powered-by": "PHP/8.2.7"}}, "8.2.7"),
    ("PHP", {"headers": {"server": "Apache/2.4.41 (Ubuntu) PHP/7.4.3"}}, "7.4.3"),
    ("IIS", {"headers": {"server": "Microsoft-IIS/10.0"}}, "10.0"),
    ("LiteSpeed", {"headers": {"server": "LiteSpeed"}}, None),
    ("Varnish", {"headers": {"via": "1.1 varnish (Varnish/7.1)"}}, None),
    (
        "Magento",
        {"script_srcs": ["/static/version1700000000/frontend/Magento/luma/en_US/requirejs/require.js"]},
        None,
    ),
    ("PrestaShop", {"meta": {"generator": ["PrestaShop"]}}, None),
    ("Ghost", {"meta": {"generator": ["Ghost 5.75"]}}, "5.75"),
    ("HubSpot", {"script_srcs": ["//js.hs-scripts.com/1234567.js"]}, None),
    (
        "Matomo",
        {"inline_scripts": ["var _paq = window._paq = window._paq || []; _paq.push(['trackPageView']);"]},
        None,
    ),
    ("Next.js", {"script_srcs": ["/_next/static/chunks/main-abc123.js"]}, None),
    ("Nuxt.js", {"script_srcs": ["/_nuxt/entry.abc123.js"]}, None),
    ("Webflow", {"html": b'<html data-wf-page="65a1" data-wf-site="65a0">'}, None),
    (
        "Yoast SEO",
        {"comments": [" This site is optimized with the Yoast SEO plugin v21.7 - https://yoast.com/ "]},
        "21.7",
    ),
    ("Tailwind CSS", {"script_srcs": ["https://cdn.tailwindcss.com"]}, None),
]


@pytest.mark.parametrize(
    ("name", "evidence", "version"), DETECTED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DETECTED)]
)
def test_technology_is_detected_with_its_version(
    name: str, evidence: dict[str, Any], version: str | None
) -> None:
    assert version_of(name, **evidence) == version


# (technology that must NOT be reported, evidence that looks related)
NOT_DETECTED: list[tuple[str, dict[str, Any]]] = [
    # a GTM container alone is not Google Analytics, and the gtag.js loader of GA is not GTM
    (
        "Google Analytics",
        {
            "inline_scripts": [
                "(function(w,d,s,l,i){w[l]=w[l]||[];"
                "w[l].push({'gtm.start':new Date().getTime(),event:'gtm.js'});"
                "j.src='https://www.googletagmanager.com/gtm.js?id='+i+dl;})(window,document,'script','dataLayer',"
                "'GTM-K9X2QP');"
            ],
            "html": b'<iframe src="https://www.googletagmanager.com/ns.html?id=GTM-K9X2QP">',
        },
    ),
    (
        "Google Tag Manager",
        {
            "script_srcs": ["https://www.googletagmanager.com/gtag/js?id=G-ABC123XYZ"],
            "inline_scripts": ["window.dataLayer = window.dataLayer || [];gtag('config', 'G-ABC123XYZ');"],
        },
    ),
    ("Google Analytics", {"inline_scripts": ["gtag('config', 'AW-123456789');"]}),  # Google Ads
    ("React", {"html": b'<div id="root"></div><div id="app" class="react-like"></div>'}),
    ("React", {"script_srcs": ["/js/preact.min.js", "/js/react-slick.min.js"]}),
    ("Vue.js", {"script_srcs": ["/js/vue-router.min.js"], "html": b"<p>data-v-model is a directive</p>"}),
    ("Apache", {"headers": {"server": "Apache-Coyote/1.1"}}),
    ("Bootstrap", {"link_hrefs": ["/css/bootstrap-datepicker.min.css"]}),
    ("Facebook Pixel", {"script_srcs": ["https://connect.facebook.net/en_US/sdk.js#xfbml=1&version=v18.0"]}),
    ("Cloudflare", {"script_srcs": ["https://cdnjs.cloudflare.com/ajax/libs/jquery/3.7.1/jquery.min.js"]}),
    ("Nginx", {"headers": {"server": "Apache/2.4.57"}}),
    ("Shopify", {"inline_scripts": ["// compare with Shopify pricing"]}),
    ("WordPress", {"html": b"<p>We build WordPress sites; see /wp-content/ docs.</p>"}),
]


@pytest.mark.parametrize(
    ("name", "evidence"), NOT_DETECTED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NOT_DETECTED)]
)
def test_lookalike_evidence_is_not_a_detection(name: str, evidence: dict[str, Any]) -> None:
    assert name not in names(**evidence)


def test_jquery_plugins_do_not_set_the_jquery_version() -> None:
    srcs = ["/js/jquery-migrate-3.4.1.min.js", "/js/jquery-ui-1.13.2.min.js", "/js/jquery.min.js"]
    hits = {hit.name: hit.version for hit in detect(script_srcs=srcs)}
    assert hits["jQuery"] is None
    assert hits["jQuery UI"] == "1.13.2"


def test_a_plain_page_reports_no_technology() -> None:
    html = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Plain</title>'
        '<link rel="stylesheet" href="/style.css"><script src="/app.js"></script></head>'
        '<body><div id="root"><p>Hello, jQuery fans and WordPress users!</p></div>'
        "<script>console.log('react to this: vue, angular');</script></body></html>"
    )
    assert on_page(html) == {}


def test_wordpress_version_comes_from_the_generator_not_from_bundled_libraries() -> None:
    srcs = [
        "/wp-includes/js/jquery/jquery.min.js?ver=3.7.1",
        "/wp-includes/js/dist/hooks.min.js?ver=c6aec9a8d4",
    ]
    assert version_of("WordPress", script_srcs=srcs) is None
    assert version_of("WordPress", script_srcs=srcs, meta={"generator": ["WordPress 6.4.2"]}) == "6.4.2"


def test_a_more_precise_version_refines_the_first_one() -> None:
    evidence = {
        "meta": {"generator": ["Drupal 10 (https://www.drupal.org)"]},
        "script_srcs": ["/core/misc/drupal.js?v=10.2.1"],
    }
    assert version_of("Drupal", **evidence) == "10.2.1"
    # but an unrelated version does not replace the preferred one
    assert (
        version_of("Drupal", meta={"generator": ["Drupal 9"]}, script_srcs=["/core/misc/drupal.js?v=10.2.1"])
        == "9"
    )


def test_implied_technologies_are_added_without_a_version_and_output_is_sorted() -> None:
    hits = detect(
        script_srcs=["/wp-content/plugins/elementor/assets/js/frontend.min.js?ver=3.18.2"],
        headers={"server": "nginx/1.22.1"},
    )
    assert [h.name for h in hits] == ["Elementor", "MySQL", "Nginx", "PHP", "WordPress"]
    by_name = {h.name: h for h in hits}
    assert by_name["WordPress"].version is None
    assert by_name["Elementor"].categories == ("Page builders",)
    assert by_name["PHP"].categories == ("Programming languages",)


def test_one_hit_per_technology_even_with_many_matches() -> None:
    hits = detect(
        script_srcs=[f"/wp-content/plugins/p{i}/x.js?ver=1.{i}" for i in range(50)],
        meta={"generator": ["WordPress 6.4.2", "WordPress 6.4.2"]},
    )
    assert [h.name for h in hits].count("WordPress") == 1


def test_detection_through_extract_uses_headers_and_markup() -> None:
    html = (
        '<html><head><meta name="generator" content="WordPress 6.5.3">'
        '<script src="/wp-includes/js/jquery/jquery.min.js?ver=3.7.1"></script></head>'
        "<body><!-- This is Squarespace. --></body></html>"
    )
    tech = on_page(html, {"server": "cloudflare", "cf-ray": "abc-AMS", "x-powered-by": "PHP/8.1.2"})
    assert tech == {
        "Cloudflare": None,
        "MySQL": None,
        "PHP": "8.1.2",
        "Squarespace": None,
        "WordPress": "6.5.3",
        "jQuery": "3.7.1",
    }


def test_required_technologies_are_all_in_the_shipped_data() -> None:
    required = {
        "WordPress",
        "Elementor",
        "WooCommerce",
        "Shopify",
        "Wix",
        "Squarespace",
        "Drupal",
        "Joomla",
        "jQuery",
        "React",
        "Vue.js",
        "Angular",
        "Bootstrap",
        "Google Analytics",
        "Google Tag Manager",
        "Facebook Pixel",
        "Hotjar",
        "Cloudflare",
        "Nginx",
        "Apache",
        "PHP",
        "IIS",
    }
    techs = fingerprints()
    assert required <= set(techs)
    assert all(tech.categories for tech in techs.values())


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"googletagmanager\.com/gtm\.js", "googletagmanager.com/gtm.js"),
        (r"(?:^|/)jquery[.-]([\d.]+)(?:\.min)?\.js", "jquery"),
        (r"^Next\.js ?([\d.]+)?", "next.js"),
        (r"colou?r", "colo"),
        (r"^WordPress(?: ([\d.]+))?", "wordpress"),
        (r"(?:static1?|assets)\.squarespace\.com/", ".squarespace.com/"),
        (r"nginx|apache", ""),  # alternation at the top: no single literal is required
        (r"[a-z]+\d{2,}", ""),
        (r"ab", ""),  # too short to be worth a substring test
    ],
)
def test_regex_gate_is_a_literal_every_match_contains(pattern: str, literal: str) -> None:
    assert _required_literal(pattern) == literal


def test_every_shipped_pattern_gate_occurs_in_what_it_matches() -> None:
    """A gate missing from a string the regex matches would hide a detection: check against the examples."""
    examples = [src for _, ev, _ in DETECTED for src in ev.get("script_srcs", []) + ev.get("link_hrefs", [])]
    for tech in fingerprints().values():
        for pattern in (*tech.script_src, *tech.link_href):
            for example in examples:
                if pattern.regex.search(example):
                    assert pattern.gate in example.lower(), (tech.name, pattern.regex.pattern, example)
