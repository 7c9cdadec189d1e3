"""Charset labels read as a browser reads them: pure, no I/O.

Why a module of its own: the fetcher decides which encoding a page is in and ``extract`` decodes it, and
the two must read a label the same way. With a table in each, a page labelled ``gb2312`` was reported as
GBK by one and decoded as GB18030 by the other. Here there is one table, following the WHATWG Encoding
Standard: labels browsers decode with a superset (``iso-8859-1`` and ``us-ascii`` as windows-1252,
``Shift_JIS`` as windows-31j, ``gb2312`` and ``gbk`` as GB18030, ...) map to that superset's Python
codec, so a page decodes here as it displays in a browser. Python codecs that are no web charset
(``base64``, ``rot13``, ``idna``, ``utf-7``, ...) are refused, so a hostile label cannot pick them.
"""

from __future__ import annotations

import codecs
import re

PRESCAN_BYTES = 4 * 1024  # how far into a document a <meta> or XML declaration is looked for
DETECT_BYTES = 16 * 1024  # how much of an undeclared, non-UTF-8 body charset_normalizer reads

# Python codec (by canonical name) -> the codec browsers actually decode that label with.
_BROWSER_CODECS = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "big5": "big5hkscs",
}
# WHATWG labels Python's codec registry does not know.
_LABEL_ALIASES = {
    "windows-874": "cp874",
    "windows-31j": "cp932",
    "x-sjis": "cp932",
    "x-gbk": "gb18030",
    "windows-949": "cp949",
    "x-euc-jp": "euc_jp",
    "x-mac-roman": "mac_roman",
    "iso-8859-8-i": "iso8859_8",
}
# Text codecs Python has that are no charset a browser accepts (UTF-7 was an XSS vector for this reason).
_NOT_WEB_CHARSETS = frozenset({"utf-7", "punycode", "unicode-escape", "raw-unicode-escape"})

_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?\s*([^"';\s]+)""", re.IGNORECASE)
# Both patterns run on a lower-cased prefix.
_META_CHARSET = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([a-z0-9_.:-]{1,40})""")
_XML_ENCODING = re.compile(rb"""\s*<\?xml[^>]{0,100}?encoding\s*=\s*["']?\s*([a-z0-9_.:-]{1,40})""")


def codec_for(label: str | None) -> str | None:
    """The Python codec to decode a charset `label` with, as a browser would; None when the label is
    unknown or names no web charset. Idempotent: a codec name it returns maps to itself."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    try:
        name = codecs.lookup(_LABEL_ALIASES.get(name, name)).name
        b"\0".decode(name, "ignore")  # refuses codecs that are not text encodings (base64, rot13, idna)
    except (LookupError, ValueError):  # ValueError: a NUL in the label; UnicodeError is one too
        return None
    if name in _NOT_WEB_CHARSETS:
        return None
    return _BROWSER_CODECS.get(name, name)


def content_type_charset(content_type: str | None) -> str | None:
    """The codec a Content-Type header's ``charset`` parameter names, if it names a usable one."""
    match = _CHARSET_PARAM.search(content_type or "")
    return None if match is None else codec_for(match.group(1))


def meta_charset(head: bytes) -> str | None:
    """The codec a ``<meta charset>`` or ``http-equiv`` Content-Type declares in the first 4 KiB: what a
    browser's prescan reads. A declared UTF-16 or UTF-32 means UTF-8 (see :func:`declared_charset`)."""
    return _declared(head, xml=False)


def declared_charset(head: bytes) -> str | None:
    """The codec a document declares about itself: an XML declaration at its very start, else
    :func:`meta_charset`.

    This is the fallback for a document nobody labelled (no BOM, no header); browsers ignore XML
    declarations in HTML, but XHTML pages handed over without a header rely on it. A label read in ASCII
    cannot be UTF-16 or UTF-32, so a document declaring one of those is UTF-8 (WHATWG).
    """
    return _declared(head, xml=True)


def bom_encoding(data: bytes) -> str | None:
    """``utf-8`` or ``utf-16`` when `data` starts with that byte order mark. A BOM cannot be wrong, so it
    outranks every label; the ``utf-16`` codec reads the mark itself to learn the byte order."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def decide_encoding(content_type: str | None, body: bytes) -> str | None:
    """The codec to decode an HTML body with, as a browser would pick it, or None when nothing says.

    A BOM wins (browsers let it override the header); then the Content-Type charset; then a <meta>
    charset in the first 4 KiB; then, if the bytes are valid UTF-8, utf-8; else charset_normalizer's
    guess from a 16 KiB prefix.
    """
    if (chosen := bom_encoding(body) or content_type_charset(content_type) or meta_charset(body)) is not None:
        return chosen
    if not body:
        return None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(body, final=False)  # a cut last char is fine
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes  # only here: most pages say or are UTF-8

        guess = from_bytes(body[:DETECT_BYTES]).best()
        return None if guess is None else codec_for(guess.encoding)
    return "utf-8"


def to_utf8(body: bytes, encoding: str | None) -> bytes:
    """The document as UTF-8 bytes, without a BOM: decoded by its BOM, else `encoding` (the fetcher's
    decision), else what the document declares, else taken as UTF-8.

    UTF-8 bodies pass through untouched (libxml2 replaces invalid sequences itself); anything else is
    decoded with replacement, so no byte sequence makes this raise.
    """
    bom = bom_encoding(body)
    if bom == "utf-8":
        return body[len(codecs.BOM_UTF8) :]
    codec = bom or codec_for(encoding) or declared_charset(body) or "utf-8"
    if codec == "utf-8":
        return body
    try:
        return body.decode(codec, "replace").encode("utf-8", "replace")
    except (UnicodeError, LookupError):
        return body


def _declared(data: bytes, *, xml: bool) -> str | None:
    head = data[:PRESCAN_BYTES].lower()
    if b"charset" not in head and b"encoding" not in head:  # the common case, without a regex
        return None
    match = (_XML_ENCODING.match(head) if xml else None) or _META_CHARSET.search(head)
    codec = None if match is None else codec_for(match.group(1).decode("ascii"))
    return "utf-8" if codec is not None and codec.startswith(("utf-16", "utf-32")) else codec
