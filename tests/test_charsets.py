"""Charset labels as browsers read them: the one table the fetcher and extract share."""

from __future__ import annotations

import codecs
import random

import pytest

from domainscan.charsets import (
    bom_encoding,
    codec_for,
    content_type_charset,
    decide_encoding,
    declared_charset,
    meta_charset,
    to_utf8,
)

CYRILLIC = "Привет, мир"
JAPANESE = "こんにちは世界"

# label -> the Python codec a browser's decoder corresponds to (WHATWG Encoding Standard)
BROWSER_TABLE = [
    ("iso-8859-1", "cp1252"),
    ("ISO_8859-1", "cp1252"),
    ("latin1", "cp1252"),
    ("latin-1", "cp1252"),
    ("us-ascii", "cp1252"),
    ("ascii", "cp1252"),
    ("Shift_JIS", "cp932"),
    ("shift-jis", "cp932"),
    ("sjis", "cp932"),
    ("x-sjis", "cp932"),
    ("windows-31j", "cp932"),
    ("gb2312", "gb18030"),
    ("GBK", "gb18030"),
    ("x-gbk", "gb18030"),
    ("euc-kr", "cp949"),
    ("tis-620", "cp874"),
    ("iso-8859-11", "cp874"),
    ("windows-874", "cp874"),
    ("iso-8859-9", "cp1254"),
    ("big5", "big5hkscs"),
    ("windows-1251", "cp1251"),
    ("koi8-r", "koi8-r"),
    ("UTF8", "utf-8"),
    ("utf-16", "utf-16"),
    (' "utf-8" ', "utf-8"),
]
REFUSED = ["base64", "rot13", "hex", "zlib", "idna", "undefined", "utf-7", "punycode", "unicode_escape"]
UNKNOWN = ["", "no-such-charset", "x-user-defined", "utf\0-8", None]


@pytest.mark.parametrize(("label", "codec"), BROWSER_TABLE)
def test_labels_map_to_the_codec_browsers_decode_with(label: str, codec: str) -> None:
    assert codec_for(label) == codec
    assert codec_for(codec) == codec  # a decision passed on (fetcher -> extract) reads the same again


@pytest.mark.parametrize("label", REFUSED + UNKNOWN)
def test_non_charsets_and_unknown_labels_are_refused(label: str | None) -> None:
    assert codec_for(label) is None


@pytest.mark.parametrize(
    ("content_type", "codec"),
    [
        ("text/html; charset=windows-1251", "cp1251"),
        ('text/html; charset="Shift_JIS"', "cp932"),
        ("text/html;charset='iso-8859-1'", "cp1252"),
        ("text/html; CHARSET = utf-8", "utf-8"),
        ("text/html; charset=base64", None),
        ("text/html", None),
        (None, None),
    ],
)
def test_content_type_charset(content_type: str | None, codec: str | None) -> None:
    assert content_type_charset(content_type) == codec


@pytest.mark.parametrize(
    ("head", "meta", "declared"),
    [
        (b'<meta charset="windows-1251">', "cp1251", "cp1251"),
        (b'<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=windows-1251">', "cp1251", "cp1251"),
        (b"<meta charset=Shift_JIS>", "cp932", "cp932"),
        (b"<meta charset=utf-16>", "utf-8", "utf-8"),  # read in ASCII, so it is not UTF-16
        (b"<meta charset=utf-32be>", "utf-8", "utf-8"),
        (b"<meta charset=base64>", None, None),
        (b'<?xml version="1.0" encoding="iso-8859-1"?><html>', None, "cp1252"),
        (b"<?xml version='1.0' encoding='utf-16'?><html>", None, "utf-8"),
        (b"<p>no declaration</p>", None, None),
        (b" " * 4096 + b'<meta charset="windows-1251">', None, None),  # past the prescan
    ],
)
def test_charset_declared_in_the_document(head: bytes, meta: str | None, declared: str | None) -> None:
    assert meta_charset(head) == meta  # what a browser's prescan reads: no XML declaration
    assert declared_charset(head) == declared


@pytest.mark.parametrize(
    ("data", "codec"),
    [
        (codecs.BOM_UTF8 + b"<html>", "utf-8"),
        (codecs.BOM_UTF16_LE + "<html>".encode("utf-16-le"), "utf-16"),
        ("<html>".encode("utf-16"), "utf-16"),
        (codecs.BOM_UTF16_BE + "<html>".encode("utf-16-be"), "utf-16"),
        (b"<html>", None),
        (b"", None),
    ],
)
def test_bom_encoding(data: bytes, codec: str | None) -> None:
    assert bom_encoding(data) == codec


RUSSIAN = (
    "Добро пожаловать на наш сайт. Мы продаём книги, журналы и газеты по всей России. "
    "Доставка бесплатная при заказе от тысячи рублей. Звоните нам каждый день с девяти до шести."
)


@pytest.mark.parametrize(
    ("content_type", "body", "codec"),
    [
        ("text/html", f'<meta charset="windows-1251"><title>{CYRILLIC}</title>'.encode("cp1251"), "cp1251"),
        ("text/html; charset=Shift_JIS", f"<title>{JAPANESE}</title>".encode("shift_jis"), "cp932"),
        ("text/html; charset=iso-8859-1", codecs.BOM_UTF8 + "<p>é</p>".encode(), "utf-8"),  # BOM wins
        ("text/html; charset=windows-1251", "<p>é</p>".encode("utf-16"), "utf-16"),
        (
            "text/html; charset=iso-8859-1",
            "<p>Größe</p>".encode(),
            "cp1252",
        ),  # a label is obeyed, as browsers do
        (
            "text/html; charset=base64",
            b"<html><meta charset=koi8-r>",
            "koi8-r",
        ),  # refused, so the meta counts
        ("text/html; charset=base64", "<p>Größe</p>".encode(), "utf-8"),
        ("text/html", f"<p>{RUSSIAN}</p>".encode("cp1251"), "cp1251"),  # detected
        ("text/html", "<p>Größe</p>".encode()[:-5] + "ö".encode()[:1], "utf-8"),  # cut mid-character
        ("text/html", bytes(range(256)) * 8, None),  # undetectable garbage
        ("text/html", random.Random(1).randbytes(4096), None),
        ("text/html", b"", None),
    ],
)
def test_decide_encoding(content_type: str, body: bytes, codec: str | None) -> None:
    assert decide_encoding(content_type, body) == codec


@pytest.mark.parametrize(
    ("body", "encoding", "utf8"),
    [
        (codecs.BOM_UTF8 + "<p>é</p>".encode(), "windows-1251", "<p>é</p>".encode()),
        ("<p>é</p>".encode("utf-16"), None, "<p>é</p>".encode()),
        (codecs.BOM_UTF16_BE + "<p>é</p>".encode("utf-16-be"), "utf-8", "<p>é</p>".encode()),
        (
            f"<title>{CYRILLIC}</title>".encode("cp1251"),
            "windows-1251",
            f"<title>{CYRILLIC}</title>".encode(),
        ),
        (f"<title>{JAPANESE}</title>".encode("cp932"), "shift_jis", f"<title>{JAPANESE}</title>".encode()),
        (
            f'<meta charset="windows-1251">{CYRILLIC}'.encode("cp1251"),
            None,
            f'<meta charset="windows-1251">{CYRILLIC}'.encode(),
        ),
        # the fetcher's decision beats a lying declaration in the document
        ('<meta charset="iso-8859-1">Größe'.encode(), "utf-8", '<meta charset="iso-8859-1">Größe'.encode()),
        (b'<meta charset="iso-8859-1">5 \x80', None, '<meta charset="iso-8859-1">5 €'.encode()),  # as cp1252
        ("Größe".encode(), "base64", "Größe".encode()),
        ("Größe".encode(), "no-such-charset", "Größe".encode()),
        (b"Caf\xe9", None, b"Caf\xe9"),  # undeclared: left to the parser as UTF-8
        (b"", None, b""),
    ],
)
def test_to_utf8(body: bytes, encoding: str | None, utf8: bytes) -> None:
    assert to_utf8(body, encoding) == utf8


@pytest.mark.parametrize(("label", "codec"), BROWSER_TABLE)
def test_the_fetcher_and_extract_read_a_label_alike(label: str, codec: str) -> None:
    body = b"<p>\x80\x93\xa4\xe9\xfe</p>"
    decided = decide_encoding(f"text/html; charset={label.strip()}", body)
    assert decided == codec
    assert to_utf8(body, decided) == to_utf8(body, label)
