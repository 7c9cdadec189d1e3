"""The fetcher's promises: redirects recorded, fallbacks in the right order, one deadline, a body cap that
holds for compressed bodies, HTML sniffing, a browser's choice of encoding, and every failure a FetchError
of the right kind with a one-line message.

Unit tests use httpx.MockTransport; the end-to-end ones use real local servers through the default
(aiohttp) transport. Nothing here touches the internet: name resolution is faked where a name is used.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import gzip
import shutil
import socket
import ssl
import subprocess
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from domainscan.config import Settings
from domainscan.errors import ErrorKind, FetchError
from domainscan.fetch import ACCEPT, Fetcher
from domainscan.models import Fetched, Target
from domainscan.netpolicy import AddressPolicy, parse_networks
from domainscan.resolver import SiteResolver

PAGE = b"<!DOCTYPE html><html><head><title>Hello</title></head><body>hi</body></html>"
HTML = {"content-type": "text/html; charset=utf-8"}

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def target(domain: str = "example.com") -> Target:
    host, _, port = domain.partition(":")
    return Target(domain=domain, host=host, port=int(port) if port else None, input=domain)


LOOPBACK_ALLOWED = AddressPolicy(parse_networks(["127.0.0.0/8"]))  # the local test servers live there


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store": False,
        "timeout": 5.0,
        "user_agent": "domainscan-test/1",
        "address_policy": LOOPBACK_ALLOWED,
    }
    values.update(overrides)
    return Settings(**values)


async def fetch(handler: Handler, domain: str = "example.com", **overrides: Any) -> Fetched:
    async with Fetcher(settings(**overrides), transport=httpx.MockTransport(handler)) as fetcher:
        return await fetcher.fetch(target(domain))


async def fetch_error(handler: Handler, domain: str = "example.com", **overrides: Any) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetch(handler, domain, **overrides)
    error = info.value
    assert "\n" not in str(error)
    assert str(error).startswith(f"{error.kind}: ")
    return error


def no_address(request: httpx.Request) -> httpx.ConnectError:
    error = httpx.ConnectError("[Errno -2] Name or service not known", request=request)
    error.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return error


# --- redirects ---------------------------------------------------------------------------------------


async def test_redirects_are_followed_and_recorded_with_relative_locations() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url == "https://example.com/":
            return httpx.Response(301, headers={"location": "/en/start"})
        if url == "https://example.com/en/start":
            return httpx.Response(302, headers={"location": "home#top"})
        if url == "https://example.com/en/home":
            return httpx.Response(307, headers={"location": "https://www.example.com/"})
        assert url == "https://www.example.com/"
        return httpx.Response(200, headers=HTML, content=PAGE)

    fetched = await fetch(handler)
    assert fetched.url == "https://www.example.com/"
    assert fetched.redirects == (
        "https://example.com/",
        "https://example.com/en/start",
        "https://example.com/en/home",
    )
    assert fetched.http_status == 200
    assert fetched.body == PAGE


async def test_a_redirect_back_to_a_visited_url_is_a_redirect_loop() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        location = "/b" if request.url.path == "/" else "https://example.com/"
        return httpx.Response(302, headers={"location": location})

    error = await fetch_error(handler)
    assert error.kind is ErrorKind.REDIRECT_LOOP
    assert error.redirects == ("https://example.com/", "https://example.com/b")


async def test_ten_redirects_are_followed_and_an_eleventh_is_a_redirect_loop() -> None:
    def chain(length: int) -> Handler:
        async def handler(request: httpx.Request) -> httpx.Response:
            step = int(request.url.params.get("n", "0"))
            if step < length:
                return httpx.Response(302, headers={"location": f"/?n={step + 1}"})
            return httpx.Response(200, headers=HTML, content=PAGE)

        return handler

    fetched = await fetch(chain(10))
    assert len(fetched.redirects) == 10
    assert fetched.url == "https://example.com/?n=10"

    error = await fetch_error(chain(11))
    assert error.kind is ErrorKind.REDIRECT_LOOP
    assert len(error.redirects) == 11
    assert "more than 10 redirects" in str(error)


async def test_a_redirect_to_a_non_http_scheme_is_a_connect_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "ftp://files.example.com/"})

    error = await fetch_error(handler)
    assert error.kind is ErrorKind.CONNECT
    assert error.url == "ftp://files.example.com/"
    assert error.redirects == ("https://example.com/",)


async def test_a_cookie_check_redirect_to_the_same_url_is_followed_with_the_cookie() -> None:
    seen: list[str | None] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        if "cookie" not in request.headers:
            return httpx.Response(302, headers={"location": "/", "set-cookie": "check=1; Path=/"})
        return httpx.Response(200, headers=HTML, content=PAGE)

    async with Fetcher(settings(), transport=httpx.MockTransport(handler)) as fetcher:
        first = await fetcher.fetch(target())
        second = await fetcher.fetch(target())
    assert first.http_status == 200
    assert first.redirects == ("https://example.com/",)
    assert seen == [None, "check=1", None, "check=1"], "cookies live and die with their fetch"
    assert second.http_status == 200


async def test_a_redirect_to_the_same_url_with_nothing_changed_is_a_loop() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/", "set-cookie": "check=1; Path=/"})

    error = await fetch_error(handler)
    assert error.kind is ErrorKind.REDIRECT_LOOP
    assert error.redirects == ("https://example.com/", "https://example.com/")


# --- fallbacks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cause",
    [ConnectionRefusedError(111, "Connection refused"), ssl.SSLCertVerificationError("verify failed")],
    ids=["refused", "tls"],
)
async def test_https_that_cannot_connect_falls_back_to_http(cause: OSError) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            raise httpx.ConnectError("failed", request=request) from cause
        return httpx.Response(200, headers=HTML, content=PAGE)

    fetched = await fetch(handler)
    assert fetched.url == "http://example.com/"
    assert fetched.redirects == ()


async def test_no_http_fallback_on_an_error_status() -> None:
    schemes: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        return httpx.Response(500, headers=HTML, content=b"<html>oops</html>")

    fetched = await fetch(handler)
    assert fetched.http_status == 500
    assert fetched.url == "https://example.com/"
    assert schemes == ["https"]


async def test_no_http_fallback_on_a_timeout() -> None:
    schemes: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        raise httpx.ReadTimeout("timed out", request=request)

    error = await fetch_error(handler, timeout=3)
    assert error.kind is ErrorKind.TIMEOUT
    assert str(error) == "timeout: no complete answer within 3s"
    assert schemes == ["https"]


async def test_when_both_schemes_are_refused_the_https_reason_is_reported() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request) from ConnectionRefusedError(111, "refused")

    error = await fetch_error(handler)
    assert error.kind is ErrorKind.CONNECT
    assert str(error) == "connect: connection refused (example.com:443)"


async def test_a_name_without_address_is_retried_with_www() -> None:
    hosts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "example.com":
            raise no_address(request)
        return httpx.Response(200, headers=HTML, content=PAGE)

    fetched = await fetch(handler)
    assert fetched.url == "https://www.example.com/"
    assert hosts == ["example.com", "www.example.com"]


async def test_dns_failure_of_both_names_reports_the_given_name() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise no_address(request)

    error = await fetch_error(handler, "nodns.test")
    assert error.kind is ErrorKind.DNS
    assert str(error) == "dns: no address for nodns.test"


# --- retries -----------------------------------------------------------------------------------------


async def test_503_with_retry_after_is_retried_after_the_wait() -> None:
    calls: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(503, headers={"retry-after": "1"})
        return httpx.Response(200, headers=HTML, content=PAGE)

    fetched = await fetch(handler)
    assert fetched.http_status == 200
    assert len(calls) == 2
    assert 0.9 <= calls[1] - calls[0] < 2


async def test_429_is_returned_when_retries_are_spent_or_the_wait_does_not_fit_the_deadline() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"retry-after": "120"})

    assert (await fetch(handler, retries=0)).http_status == 429
    assert calls == 1
    calls = 0
    started = time.monotonic()
    assert (await fetch(handler, timeout=2)).http_status == 429  # 120 s shortened to 3 s: still too long
    assert calls == 1
    assert time.monotonic() - started < 1


async def test_a_dropped_connection_is_retried_once() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, headers=HTML, content=PAGE)

    assert (await fetch(handler)).http_status == 200
    assert calls == 2


# --- body ----------------------------------------------------------------------------------------------


async def test_the_body_is_capped_and_marked_truncated() -> None:
    big = b"<html><body>" + b"x" * 20_000

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=HTML, content=big)

    fetched = await fetch(handler, max_bytes=4096)
    assert fetched.body == big[:4096]
    assert fetched.truncated


async def test_a_body_exactly_at_the_cap_is_not_truncated() -> None:
    body = b"<html>" + b"x" * (4096 - 6)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=HTML, content=body)

    fetched = await fetch(handler, max_bytes=4096)
    assert fetched.body == body
    assert not fetched.truncated


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """200 MiB of HTML-ish bytes, gzip-compressed to about 200 KiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1 << 20)
    data = compressor.compress(b"<html><body>") + b"".join(compressor.compress(block) for _ in range(200))
    return data + compressor.flush()


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    """A streamed body, as a transport delivers it: not read (nor decoded) by httpx beforehand."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_gzip_bomb_costs_only_the_cap(gzip_bomb: bytes) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {**HTML, "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, content=chunks(gzip_bomb, 65536))

    tracemalloc.start()
    try:
        fetched = await fetch(handler, max_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(fetched.body) == 1 << 20
    assert fetched.body.startswith(b"<html><body>   ")
    assert fetched.truncated
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 1 MiB cap"


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_deflate_bodies_are_decoded_whether_zlib_wrapped_or_raw(wbits: int) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    body = compressor.compress(PAGE) + compressor.flush()

    async def handler(request: httpx.Request) -> httpx.Response:
        # stream=, not content=: a response as transports deliver it, not already read and decoded by httpx
        return httpx.Response(
            200, headers={**HTML, "content-encoding": "deflate"}, stream=httpx.ByteStream(body)
        )

    fetched = await fetch(handler)
    assert fetched.body == PAGE
    assert not fetched.truncated


async def test_a_pdf_is_not_html_and_only_a_prefix_is_read() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/pdf"}, content=b"%PDF" * 300_000)

    fetched = await fetch(handler)
    assert not fetched.is_html
    assert fetched.content_type == "application/pdf"
    assert len(fetched.body) <= 16 * 1024
    assert fetched.truncated


@pytest.mark.parametrize(
    ("body", "is_html"),
    [
        (PAGE, True),
        (codecs.BOM_UTF8 + b"\n  <html lang=en><p>hi", True),
        (b"<!-- generated --><div>hi</div>", True),
        (b"<?xml version='1.0'?>\n<!DOCTYPE html PUBLIC '-//W3C//DTD XHTML 1.0 Strict//EN'><html>", True),
        ("<html><title>é</title>".encode("utf-16"), True),
        (b"<?xml version='1.0'?><rss version='2.0'></rss>", False),
        (b'{"json": true}', False),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100, False),
    ],
    ids=["doctype", "bom-space", "comment", "xhtml", "utf16", "rss", "json", "png"],
)
async def test_without_a_content_type_html_is_recognized_by_its_first_bytes(
    body: bytes, is_html: bool
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    fetched = await fetch(handler)
    assert fetched.is_html is is_html


async def test_an_untyped_binary_body_is_not_read_past_a_prefix() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"\x00\x01" * 1_000_000)

    fetched = await fetch(handler)
    assert not fetched.is_html
    assert len(fetched.body) <= 16 * 1024


async def test_an_empty_html_page_is_html() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html"})

    fetched = await fetch(handler)
    assert fetched.is_html
    assert fetched.body == b""
    assert fetched.encoding is None


@pytest.mark.parametrize("status", [403, 404, 500, 503])
async def test_error_statuses_are_returned_as_fetched(status: int) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=HTML, content=b"<html><title>no</title>" + b"x" * 100_000)

    fetched = await fetch(handler, retries=0)
    assert fetched.http_status == status
    assert fetched.is_html
    assert len(fetched.body) <= 16 * 1024


async def test_headers_and_request_identity() -> None:
    sent: list[httpx.Headers] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers)
        return httpx.Response(
            200,
            headers=[("Content-Type", "text/html"), ("Server", "nginx"), ("X-Multi", "a"), ("x-multi", "b")],
            content=PAGE,
        )

    fetched = await fetch(handler)
    assert fetched.headers["x-multi"] == "a, b"
    assert fetched.server == "nginx"
    assert all(name == name.lower() for name in fetched.headers)
    assert sent[0]["user-agent"] == "domainscan-test/1"
    assert sent[0]["accept"] == ACCEPT
    assert sent[0]["accept-encoding"] == "gzip, deflate"
    assert fetched.elapsed_ms >= 0


# --- encoding ------------------------------------------------------------------------------------------

RUSSIAN = (
    "Добро пожаловать на наш сайт. Мы продаём книги, журналы и газеты по всей России. "
    "Доставка бесплатная при заказе от тысячи рублей. Звоните нам каждый день с девяти до шести."
)


@pytest.mark.parametrize(
    ("content_type", "body", "encoding"),
    [
        ("text/html; charset=windows-1251", b"<html>", "cp1251"),
        ('text/html; charset="Shift_JIS"', b"<html>", "cp932"),  # windows-31j, as browsers decode it
        ("text/html; charset=iso-8859-1", b"<html>", "cp1252"),  # as browsers do
        ("text/html; charset=no-such-codec", b"<html><meta charset=koi8-r>", "koi8-r"),
        ("text/html; charset=base64", b"<html>", "utf-8"),  # not a text encoding: ignored
        ("text/html", codecs.BOM_UTF8 + "<html>é".encode(), "utf-8"),
        ("text/html; charset=iso-8859-1", codecs.BOM_UTF8 + b"<html>", "utf-8"),  # a BOM wins
        ("text/html", "<html>é".encode("utf-16"), "utf-16"),
        ("text/html", b"<html><head><meta charset='Shift_JIS'>", "cp932"),
        (
            "text/html",
            b'<html><head><META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=windows-1251">',
            "cp1251",
        ),
        ("text/html", b"<html><meta charset=utf-16>", "utf-8"),  # readable in ASCII, so not UTF-16
        ("text/html", f"<html><body><p>{RUSSIAN}</p></body></html>".encode("cp1251"), "cp1251"),
        ("text/html", f"<html><body><p>{RUSSIAN}</p></body></html>".encode(), "utf-8"),
        ("text/html", b"<html><body>plain ascii</body></html>", "utf-8"),
    ],
    ids=[
        "header",
        "header-quoted",
        "latin1-is-cp1252",
        "unknown-header-then-meta",
        "non-text-codec",
        "bom-utf8",
        "bom-beats-header",
        "bom-utf16",
        "meta-charset",
        "meta-http-equiv",
        "meta-utf16-lie",
        "detect-cp1251",
        "valid-utf8",
        "ascii",
    ],
)
async def test_encoding_is_chosen_as_a_browser_would(content_type: str, body: bytes, encoding: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=body)

    fetched = await fetch(handler)
    assert fetched.encoding == encoding


# --- real local servers, default (aiohttp) transport -----------------------------------------------

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LocalServer:
    """An asyncio TCP server on 127.0.0.1:ephemeral whose connections are all cancelled on exit."""

    def __init__(self, respond: Respond) -> None:
        self._respond = respond
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> LocalServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """The request head, or None when the client opened with a TLS handshake (this server is plain)."""
    first = await reader.readexactly(1)
    if first == b"\x16":
        return None
    return first + await reader.readuntil(b"\r\n\r\n")


def http_response(body: bytes, headers: dict[str, str] | None = None, status: str = "200 OK") -> bytes:
    fields = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body)), **(headers or {})}
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


async def serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (request := await read_request(reader)) is not None:
        path = request.split(b" ", 2)[1]
        if path == b"/":
            writer.write(http_response(b"", {"Location": "/home"}, "301 Moved Permanently"))
        else:
            body = gzip.compress(PAGE)
            writer.write(http_response(body, {"Content-Encoding": "gzip", "Server": "local"}))
        await writer.drain()


async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # accepts, never reads, never answers


async def dripper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await read_request(reader) is None:
        return
    writer.write(http_response(b"", {"Content-Length": "100000"}))
    while True:
        writer.write(b"<")
        await writer.drain()
        await asyncio.sleep(0.2)


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Only 127.0.0.1 and localhost resolve; every lookup is recorded. Keeps tests off the internet."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        asked.append(name)
        if name not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


async def fetch_real(domain: str, **overrides: Any) -> Fetched:
    async with Fetcher(settings(**overrides)) as fetcher:
        return await fetcher.fetch(target(domain))


async def fetch_real_error(domain: str, **overrides: Any) -> tuple[FetchError, float]:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await fetch_real(domain, **overrides)
    assert "\n" not in str(info.value)
    return info.value, time.monotonic() - started


@pytest.mark.usefixtures("no_dns")
async def test_a_real_page_through_the_default_transport() -> None:
    async with LocalServer(serve_page) as server:
        fetched = await fetch_real(server.domain)
    # https is attempted first, fails the handshake against a plain server, and http takes over.
    assert fetched.url == f"http://{server.domain}/home"
    assert fetched.redirects == (f"http://{server.domain}/",)
    assert fetched.body == PAGE  # gzip decoded by us: aiohttp passes it through compressed
    assert fetched.headers["content-encoding"] == "gzip"
    assert fetched.server == "local"
    assert fetched.is_html
    assert fetched.encoding == "utf-8"


@pytest.mark.usefixtures("no_dns")
async def test_sixty_concurrent_fetches_share_one_client() -> None:
    async with LocalServer(serve_page) as server, Fetcher(settings(concurrency=50)) as fetcher:
        results = await asyncio.gather(*(fetcher.fetch(target(server.domain)) for _ in range(60)))
    assert all(r.body == PAGE and r.url.endswith("/home") for r in results)


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize("scoped", [True, False], ids=["domain-scope", "control-batch-pool"])
async def test_a_domains_connections_serve_its_redirects_and_close_when_its_scan_ends(scoped: bool) -> None:
    """A finished domain's connections must not idle in a pool: a batch kept thousands open, past the
    usual limit of 1024 file descriptors. The control fetches outside a domain's scope, through the
    batch's shared pool, where the connection stays open after the fetch."""
    open_now: set[asyncio.StreamWriter] = set()
    all_closed = asyncio.Event()

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_now.add(writer)
        try:
            await serve_page(reader, writer)
        finally:
            open_now.discard(writer)
            if not open_now:
                all_closed.set()

    async with LocalServer(counted) as server, Fetcher(settings()) as fetcher:
        async with fetcher.site() if scoped else contextlib.nullcontext():
            fetched = await fetcher.fetch(target(server.domain))
            assert fetched.redirects == (f"http://{server.domain}/",)
            assert len(open_now) == 1, "the redirect and the page came over one connection"
            all_closed.clear()  # (the refused https attempt's connection closed before)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_closed.wait(), 2 if scoped else 0.3)
        assert len(open_now) == (0 if scoped else 1)


@pytest.mark.usefixtures("no_dns")
async def test_a_server_that_never_answers_times_out_within_the_deadline() -> None:
    async with LocalServer(tarpit) as server:
        error, took = await fetch_real_error(server.domain, timeout=1)
    assert error.kind is ErrorKind.TIMEOUT
    assert str(error) == "timeout: no complete answer within 1s"
    assert took < 1.5


@pytest.mark.usefixtures("no_dns")
async def test_a_server_that_drips_times_out_within_the_deadline() -> None:
    async with LocalServer(dripper) as server:
        error, took = await fetch_real_error(server.domain, timeout=1)
    assert error.kind is ErrorKind.TIMEOUT
    assert error.url == f"http://{server.domain}/"
    assert took < 1.5


@pytest.mark.usefixtures("no_dns")
async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error, _ = await fetch_real_error(f"127.0.0.1:{port}")
    assert error.kind is ErrorKind.CONNECT
    assert str(error) == f"connect: connection refused (127.0.0.1:{port})"


@pytest.mark.parametrize("remembered", [True, False], ids=["remembered", "control-forgotten"])
async def test_a_refused_address_and_port_is_not_tried_again_for_another_name(
    monkeypatch: pytest.MonkeyPatch, remembered: bool
) -> None:
    """Shared hosting: many names, one address whose port refuses. Only the first name pays for a
    connection attempt; the others are told "connection refused" at once, in the same words. The control
    forgets every refusal and sees every attempt made, so the count below can tell the two apart."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real_getaddrinfo("127.0.0.1" if host in ("a.test", "b.test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    if not remembered:
        monkeypatch.setattr(SiteResolver, "refused", lambda self, host, port: None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    async with Fetcher(settings()) as fetcher:
        for name in ("a.test", "b.test"):
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(target(f"{name}:{port}"))  # https, then http, on the same port
            assert str(info.value) == f"connect: connection refused ({name}:{port})"
    assert all(address == ("127.0.0.1", port) for address in attempts)
    assert len(attempts) == (1 if remembered else 4)


async def test_a_name_that_does_not_resolve_is_a_dns_error(no_dns: list[str]) -> None:
    error, took = await fetch_real_error("nodns.invalid")
    assert error.kind is ErrorKind.DNS
    assert str(error) == "dns: no address for nodns.invalid"
    assert "www.nodns.invalid" in no_dns
    assert took < 1


@pytest.mark.usefixtures("no_dns")
async def test_oversized_response_headers_are_refused() -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(http_response(PAGE, {"X-Huge": "x" * 100_000}))
            await writer.drain()

    async with LocalServer(respond) as server:
        error, _ = await fetch_real_error(server.domain)
    assert error.kind is ErrorKind.CONNECT


# --- TLS, on both the aiohttp and the httpx (httpcore) transports ------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
@pytest.mark.usefixtures("no_dns")
async def test_an_untrusted_certificate_is_a_tls_error(self_signed: ssl.SSLContext, transport: str) -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    server = await asyncio.start_server(respond, "127.0.0.1", 0, ssl=self_signed)
    port = server.sockets[0].getsockname()[1]
    try:
        chosen = None if transport == "aiohttp" else httpx.AsyncHTTPTransport()
        with pytest.raises(FetchError) as info:
            async with Fetcher(settings(), transport=chosen) as fetcher:
                await fetcher.fetch(target(f"127.0.0.1:{port}"))
    finally:
        server.close()
    # http on the same port meets a TLS server and fails too; the https reason is the one reported.
    assert info.value.kind is ErrorKind.TLS
    assert str(info.value).startswith("tls: certificate verify failed: self")
    assert str(info.value).endswith(f"(127.0.0.1:{port})")


@pytest.mark.usefixtures("no_dns")
async def test_a_refused_connection_is_a_connect_error_with_httpcore_too() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError) as info:
        async with Fetcher(settings(), transport=httpx.AsyncHTTPTransport()) as fetcher:
            await fetcher.fetch(target(f"127.0.0.1:{port}"))
    assert str(info.value) == f"connect: connection refused (127.0.0.1:{port})"


async def test_a_corrupt_gzip_body_keeps_what_decoded() -> None:
    page = b"<html><body>" + bytes(range(256)).hex().encode() * 100
    body = gzip.compress(page)
    corrupt = body[:200] + b"\xff" * 64 + body[264:]

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {**HTML, "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, content=chunks(corrupt, 100))

    fetched = await fetch(handler)
    assert fetched.truncated
    assert fetched.body.startswith(b"<html><body>00010203")


# --- the address policy -----------------------------------------------------------------------------


async def test_redirect_to_cloud_metadata_is_blocked_before_any_request() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/"})

    error = await fetch_error(handler, address_policy=AddressPolicy())
    assert error.kind is ErrorKind.BLOCKED
    assert str(error) == (
        "blocked: 169.254.169.254 is a link-local address (cloud metadata services live here); "
        "use --allow-net to scan it"
    )
    assert seen == ["https://example.com/"]  # the trap was never asked
    assert error.redirects == ("https://example.com/",)


@pytest.mark.parametrize("location", ["http://[::ffff:10.0.0.1]/", "http://127.1.2.3:8080/", "http://[::1]/"])
async def test_redirects_to_ip_literals_are_checked(location: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "example.com":
            return httpx.Response(301, headers={"location": location})
        return httpx.Response(200, headers=HTML, content=b"<title>secret</title>")

    error = await fetch_error(handler, address_policy=AddressPolicy())
    assert error.kind is ErrorKind.BLOCKED


async def test_allow_net_opens_a_range() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "example.com":
            return httpx.Response(301, headers={"location": "http://10.1.2.3/"})
        return httpx.Response(200, headers=HTML, content=b"<title>intranet</title>")

    page = await fetch(handler, address_policy=AddressPolicy(parse_networks(["10.0.0.0/8"])))
    assert page.url == "http://10.1.2.3/"


async def test_a_name_resolving_to_loopback_is_blocked_on_the_real_transport() -> None:
    async with LocalServer(serve_page) as server:
        error, _ = await fetch_real_error(f"localhost:{server.port}", address_policy=AddressPolicy())
    assert error.kind is ErrorKind.BLOCKED
    assert "127.0.0.1 is a loopback address" in str(error)
    assert str(error).startswith("blocked: localhost: ")


# --- site files: robots.txt and sitemaps -------------------------------------------------------------


async def fetch_file(handler: Handler, url: str, *, cap: int = 1 << 20, **overrides: Any) -> Fetched:
    """`cap` is the file's byte cap; `overrides` are settings (the homepage's --max-bytes among them)."""
    async with Fetcher(settings(**overrides), transport=httpx.MockTransport(handler)) as fetcher:
        return await fetcher.fetch_url(url, max_bytes=cap)


async def test_a_file_follows_and_records_redirects_and_is_read_as_it_is() -> None:
    xml = b'<?xml version="1.0"?><urlset><url><loc>https://www.example.com/</loc></url></urlset>'
    accepts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        accepts.append(request.headers["accept"])
        if request.url.host == "example.com":
            return httpx.Response(301, headers={"location": "https://www.example.com/sitemap.xml#top"})
        return httpx.Response(200, headers={"content-type": "text/html"}, content=xml)  # a mislabelled file

    fetched = await fetch_file(handler, "https://example.com/sitemap.xml")
    assert fetched.url == "https://www.example.com/sitemap.xml"
    assert fetched.redirects == ("https://example.com/sitemap.xml",)
    assert (fetched.http_status, fetched.body, fetched.truncated) == (200, xml, False)
    assert fetched.is_html  # from the Content-Type alone: nothing is sniffed, nothing decoded
    assert accepts == ["*/*", "*/*"]


async def test_a_file_has_its_own_cap_whatever_max_bytes_says() -> None:
    body = b"https://example.com/page\n" * 10_000  # 250,000 bytes

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/plain"}, content=body)

    small = await fetch_file(handler, "https://example.com/sitemap.txt", cap=100_000, max_bytes=4096)
    assert (len(small.body), small.truncated) == (100_000, True)
    whole = await fetch_file(handler, "https://example.com/sitemap.txt", cap=len(body), max_bytes=4096)
    assert (whole.body, whole.truncated) == (body, False)  # far over the homepage's --max-bytes (4096 here)


async def test_a_gzip_encoded_file_is_decoded_up_to_its_cap(gzip_bomb: bytes) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/xml", "content-encoding": "gzip"}
        if request.url.path == "/bomb.xml":
            return httpx.Response(200, headers=headers, content=chunks(gzip_bomb, 65536))
        return httpx.Response(200, headers=headers, content=chunks(gzip.compress(b"<urlset/>"), 4))

    small = await fetch_file(handler, "https://example.com/sitemap.xml")
    assert (small.body, small.truncated) == (b"<urlset/>", False)
    bomb = await fetch_file(handler, "https://example.com/bomb.xml", cap=2 << 20)
    assert (len(bomb.body), bomb.truncated) == (2 << 20, True)


async def test_a_file_redirected_to_a_private_address_is_blocked() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/sitemap.xml"})

    with pytest.raises(FetchError) as info:
        await fetch_file(handler, "https://example.com/robots.txt", address_policy=AddressPolicy())
    assert info.value.kind is ErrorKind.BLOCKED
    assert info.value.redirects == ("https://example.com/robots.txt",)
    assert seen == ["https://example.com/robots.txt"]


@pytest.mark.parametrize("url", ["ftp://example.com/sitemap.xml", "https://exa mple.com/x", "not a url"])
async def test_a_file_url_that_is_no_web_address_is_a_connect_error(url: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing is requested")

    with pytest.raises(FetchError) as info:
        await fetch_file(handler, url)
    assert info.value.kind is ErrorKind.CONNECT
    assert "\n" not in str(info.value)


async def test_an_error_status_file_comes_back_with_a_prefix() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, headers=HTML, content=b"<html>" + b"x" * 100_000)

    fetched = await fetch_file(handler, "https://example.com/robots.txt")
    assert fetched.http_status == 404
    assert len(fetched.body) == 16 * 1024


async def test_a_site_file_is_found_the_way_the_homepage_is() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "example.com":
            raise no_address(request)
        if request.url.scheme == "https":
            raise httpx.ConnectError("refused", request=request) from ConnectionRefusedError(111, "refused")
        return httpx.Response(200, headers={"content-type": "text/plain"}, content=b"User-agent: *\n")

    async with Fetcher(settings(), transport=httpx.MockTransport(handler)) as fetcher:
        fetched = await fetcher.fetch_site_file(target(), "/robots.txt", max_bytes=1000)
    assert fetched.url == "http://www.example.com/robots.txt"
    assert fetched.body == b"User-agent: *\n"


async def test_one_deadline_covers_the_homepage_and_the_files_after_it() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.4)
        return httpx.Response(200, headers=HTML, content=PAGE)

    async with Fetcher(settings(timeout=1.0), transport=httpx.MockTransport(handler)) as fetcher:
        started = time.monotonic()
        deadline = fetcher.deadline()
        await fetcher.fetch(target(), deadline=deadline)
        await fetcher.fetch_url("https://example.com/robots.txt", max_bytes=1000, deadline=deadline)
        with pytest.raises(FetchError) as info:
            await fetcher.fetch_url("https://example.com/sitemap.xml", max_bytes=1000, deadline=deadline)
        took = time.monotonic() - started
        assert info.value.kind is ErrorKind.TIMEOUT
        assert info.value.url == "https://example.com/sitemap.xml"
        assert 0.95 < took < 1.3
        assert deadline.expired
        with pytest.raises(FetchError, match=r"^timeout: "):  # a spent deadline fails at once
            await fetcher.fetch_url("https://example.com/late.xml", max_bytes=1000, deadline=deadline)
        assert time.monotonic() - started < 1.4


async def test_a_file_can_be_read_only_far_enough_to_tell_what_it_is() -> None:
    yielded: list[int] = []

    async def page_body() -> AsyncIterator[bytes]:
        yield b"<!DOCTYPE html><html><head><title>Soft 404</title></head><body>"
        for _ in range(1000):
            yielded.append(1)
            yield b"x" * 8192

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html"}, content=page_body())

    async with Fetcher(settings(), transport=httpx.MockTransport(handler)) as fetcher:
        fetched = await fetcher.fetch_url(
            "https://example.com/sitemap.xml",
            max_bytes=50 << 20,
            prefix_only_if=lambda head: head.startswith(b"<!DOCTYPE html>"),
        )
    assert (len(fetched.body), fetched.truncated) == (16 * 1024, True)
    assert len(yielded) < 5  # the other 8 MB were never read


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "no address for {host}"),
        (
            socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            "no answer from the resolver for {host} (a temporary failure)",
        ),
        (OSError(errno.EMFILE, "Too many open files"), "the lookup of {host} failed: too many open files"),
    ],
    ids=["no-address", "resolver-silent", "out-of-files"],
)
async def test_a_failed_lookup_says_why(raised: OSError, said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a name without an address is the site's fault: a silent resolver or a process out of file
    descriptors (the errno of a lookup that could not start) must not read as "no address"."""

    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    error, _ = await fetch_real_error("lookup.test")
    assert error.kind is ErrorKind.DNS
    assert str(error) == "dns: " + said.format(host="lookup.test")
