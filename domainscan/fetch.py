"""The HTTP client: a domain's homepage and files (robots.txt, sitemaps), under one deadline, bounded.

Why it looks the way it does:

- **httpx over the aiohttp transport.** httpx gives the API (requests, headers, MockTransport for tests);
  aiohttp does the socket work. On 2000 local sites a bare httpx loop cost 2.3x a bare aiohttp loop and
  httpx over an aiohttp transport 1.3x (GUIDE §8), so the default transport is aiohttp's
  (:mod:`domainscan.transport`), with a session we build ourselves to size the connection pool to
  ``--concurrency``, cache DNS for the batch, keep no cookies and bound the response headers.
  Requests go to the transport directly, not through ``httpx.AsyncClient``: redirects and cookies are
  handled here anyway, and the client's layers (header merging, its own cookie jar, auth and redirect
  hooks) cost a fifth of a fetch's CPU time.
- **One deadline per domain.** A :class:`Deadline` is a moment on the event loop's clock, taken once per
  domain; every fetch for that domain (the homepage, robots.txt, each sitemap) runs inside
  ``asyncio.timeout_at`` of that same moment, covering every attempt (https, http, ``www.``), redirect,
  retry wait and body. Per-phase socket timeouts alone let a server that drips a byte a second, or a
  chain of slow redirects, hold a worker for minutes; the deadline makes ``--timeout`` mean what users
  think: the longest one domain can take, homepage and sitemaps together. Each fetch opens its own scope
  on the shared moment (rather than one scope around them all) so that each can say which URL it was on
  when time ran out.
- **Homepages and files.** :meth:`Fetcher.fetch` reads a homepage: HTML sniffing, a short prefix of
  anything else, the charset a browser would pick. :meth:`Fetcher.fetch_url` and
  :meth:`Fetcher.fetch_site_file` read any other file of the site (robots.txt, a sitemap) with a byte cap
  of the caller's. Both go through the same request, redirect, retry, decoding and error machinery;
  only the ``Accept`` header and the reading of the final body differ (:class:`_Reading`).
- **A body cap that holds for compressed bodies.** We only advertise gzip and deflate and decompress
  them ourselves with zlib's ``max_length``, so a gzip bomb costs the cap and not a multiple of a
  network chunk (httpx's decoders inflate whole chunks). Brotli and zstd are not advertised: their
  decoders here cannot stop at a size.
- **The address policy on the address connected to.** Our resolver
  (:class:`~domainscan.resolver.SiteResolver`) drops every address the
  :class:`~domainscan.netpolicy.AddressPolicy` refuses before aiohttp connects, so a name that resolves
  (or rebinds) to 10.x or 169.254.169.254 is ``blocked``; IP-literal URLs never reach a resolver, so
  every hop's URL is checked too. Nothing private is contacted unless ``--allow-net``. The same resolver
  looks a name up once for all its ports and does not retry an address and port that just refused a
  connection; the fetcher tells it of each refusal.
- **Errors translated in one place.** ``Fetcher._translated`` turns whatever httpx, httpcore, aiohttp,
  ``ssl`` or the OS raised into a :class:`~domainscan.errors.FetchError` with an ``ErrorKind`` and a
  one-line message. The kind is read from the original exceptions on the ``__cause__``/``__context__``
  chain (aiohttp wraps OS and TLS errors), and from an httpx exception only when nothing deeper says
  more (httpcore's transport and MockTransport raise httpx types).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import ipaddress
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TypeVar

import aiohttp
import httpx
from aiohttp.http_exceptions import HttpProcessingError

from domainscan.charsets import content_type_charset, decide_encoding
from domainscan.config import Settings
from domainscan.errors import ErrorKind, FetchError
from domainscan.models import Fetched, Target
from domainscan.resolver import Blocked, KnownRefused, SiteResolver
from domainscan.transport import AiohttpTransport

MAX_REDIRECTS = 10
ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
FILE_ACCEPT = "*/*"  # robots.txt, and whatever a sitemap URL serves (XML, gzip, text)
PARALLEL_PER_DOMAIN = 4  # requests one domain may have in flight at once (the sitemap scan's)
ACCEPT_ENCODING = "gzip, deflate"  # only what _Decoder can stop at the cap

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({429, 503})
_MAX_RETRY_AFTER = 3.0  # seconds; a longer Retry-After is shortened, not obeyed
_BACKOFF = 0.5  # seconds before a retry the server gave no Retry-After for
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_SNIFF_BYTES = 1024  # how much of an untyped body decides whether it is HTML
_PREFIX_BYTES = 16 * 1024  # what is kept of a body nobody will parse (not HTML, or an error status)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
_FAMILY = socket.AF_UNSPEC  # what the connector asks the resolver for: IPv4 and IPv6

# Header bounds for the aiohttp session: generous enough for real Content-Security-Policy and Set-Cookie
# headers, small enough that a hostile server cannot make us buffer more than ~2 MiB of them.
_MAX_HEADER_LINE = 16 * 1024
_MAX_HEADERS = 128

# The start of an HTML document (WHATWG MIME sniffing's HTML patterns, plus <meta> and an XML prolog
# followed by an HTML doctype or root), after BOM and whitespace.
_HTML_START = re.compile(
    rb"<(?:!doctype\s+html|html|head|body|title|meta|script|style|iframe|h1|div|font|table|a|b|br|p)[\s>/]"
    rb"|<!--"
    rb"|<\?xml[^>]*>\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]",
    re.IGNORECASE | re.DOTALL,
)
_WHITESPACE = b" \t\n\r\f"

_E = TypeVar("_E", bound=BaseException)
_CookieState = frozenset[tuple[str, str, str, str | None]]  # (domain, path, name, value) of each cookie


class _ConnectionLost(FetchError):
    """A connection reset or dropped by the server: the one transport failure worth a retry."""


@dataclass(slots=True)
class _Trail:
    """Where one fetch has got to, so an error (the deadline's too) can say which URL it was on."""

    url: str
    redirects: list[str] = field(default_factory=list)
    cookies: httpx.Cookies | None = None  # this fetch's own jar, made by the first Set-Cookie


@dataclass(frozen=True, slots=True)
class _Page:
    """A final (non-redirect) response, its body read as far as it is worth reading."""

    url: str
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool
    is_html: bool
    encoding: str | None


@dataclass(frozen=True, slots=True)
class _Reading:
    """What one fetch asks for (`accept`) and how it reads the final response (`read`)."""

    accept: str
    read: Callable[[httpx.Response], Awaitable[_Page]]


@dataclass(frozen=True, slots=True)
class Deadline:
    """The moment, on the running event loop's clock, by which one domain's fetches must be done.

    Take one per domain (:meth:`after`, or :meth:`Fetcher.deadline`) and pass it to every fetch for
    that domain: the homepage, robots.txt and the sitemaps then share one ``--timeout``.
    """

    when: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(asyncio.get_running_loop().time() + seconds)

    def left(self) -> float:
        """Seconds left (negative once it has passed)."""
        return self.when - asyncio.get_running_loop().time()

    @property
    def expired(self) -> bool:
        return self.left() <= 0


@dataclass(frozen=True, slots=True)
class _Wait:
    """The server asked us to come back (429/503) and the wait fits the deadline."""

    seconds: float


class Fetcher:
    """Fetches homepages and site files for a whole batch through one transport; safe for concurrent
    calls.

    Nothing is kept between calls except the transport (its connection pool and DNS cache).
    """

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._timeout_message = f"timeout: no complete answer within {settings.timeout:g}s"
        self._homepage = _Reading(ACCEPT, self._read_page)
        # A domain whose sitemaps are scanned has up to PARALLEL_PER_DOMAIN requests in flight.
        connections = settings.concurrency * (PARALLEL_PER_DOMAIN if settings.sitemaps else 1)
        self._resolver: SiteResolver | None = None  # told of refusals; a given transport has none of ours
        if transport is None:
            self._resolver = SiteResolver(settings.address_policy)
            transport = _aiohttp_transport(connections, self._resolver)
        self._transport = transport
        self._headers = {"User-Agent": settings.user_agent, "Accept-Encoding": ACCEPT_ENCODING}

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.aclose()

    def site(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The scope of one domain's scan: the requests made inside reuse each other's connections,
        and those are closed on leaving, instead of idling in a pool for the whole batch (see
        :mod:`domainscan.transport`). A transport given to the Fetcher (tests) has no such scope."""
        if isinstance(self._transport, AiohttpTransport):
            return self._transport.site()
        return contextlib.nullcontext()

    def deadline(self) -> Deadline:
        """A new domain's deadline: ``settings.timeout`` from now."""
        return Deadline.after(self._settings.timeout)

    async def fetch(self, target: Target, *, deadline: Deadline | None = None) -> Fetched:
        """Fetch the homepage of `target`: https, then http on a connect/TLS failure, then ``www.``
        when the name does not resolve; redirects followed and recorded; all before `deadline`
        (default: ``settings.timeout`` from now).

        Returns 4xx/5xx and non-HTML answers as a Fetched (the pipeline decides what they mean);
        raises FetchError when there is no answer at all.
        """
        trail = _Trail(url=f"https://{target.domain}/")
        reading = self._homepage
        return await self._run(
            trail, deadline, lambda scope: self._fetch_site(target, "/", trail, scope, reading)
        )

    async def fetch_url(
        self,
        url: str,
        *,
        max_bytes: int,
        deadline: Deadline | None = None,
        accept: str = FILE_ACCEPT,
        prefix_only_if: Callable[[bytes], bool] | None = None,
    ) -> Fetched:
        """GET one URL of a site (robots.txt, a sitemap), following and recording its redirects, with
        the homepage's deadline, address policy, retries and Content-Encoding decoding.

        The body is read up to `max_bytes` decoded bytes (``truncated`` beyond), as it is: no charset
        detection (``is_html`` and ``encoding`` come from the Content-Type alone). `prefix_only_if` is
        asked about the first KiB of a body: when it says so (a web page where a sitemap was expected,
        say), only a short prefix is read, ``truncated``. An error status comes back as a Fetched with
        a short prefix of its body; FetchError when there is no answer at all.
        """
        trail = _Trail(url=url)
        reading = _Reading(accept, partial(self._read_file, limit=max_bytes, prefix_only_if=prefix_only_if))
        return await self._run(
            trail, deadline, lambda scope: self._follow(_request_url(url), trail, scope, reading)
        )

    async def fetch_site_file(
        self,
        target: Target,
        path: str,
        *,
        max_bytes: int,
        deadline: Deadline | None = None,
        accept: str = FILE_ACCEPT,
    ) -> Fetched:
        """Like :meth:`fetch_url` for `path` (``/robots.txt``) on `target`'s site, found the way the
        homepage is (https, then http, then ``www.``): for when there is no homepage to say where the
        site answers."""
        trail = _Trail(url=f"https://{target.domain}{path}")
        reading = _Reading(accept, partial(self._read_file, limit=max_bytes))
        return await self._run(
            trail, deadline, lambda scope: self._fetch_site(target, path, trail, scope, reading)
        )

    async def _run(
        self,
        trail: _Trail,
        deadline: Deadline | None,
        go: Callable[[asyncio.Timeout], Awaitable[_Page]],
    ) -> Fetched:
        """Run one fetch inside its own scope on the domain's deadline, and describe what it got."""
        started = time.monotonic()
        scope = asyncio.timeout_at((deadline or self.deadline()).when)
        try:
            async with scope:
                page = await go(scope)
        except TimeoutError:
            raise self._timeout_error(trail) from None
        except FetchError as exc:
            # A library that turned the deadline's cancellation into an error of its own still timed out.
            if scope.expired():
                raise self._timeout_error(trail) from exc
            raise
        return Fetched(
            url=page.url,
            http_status=page.status,
            redirects=tuple(trail.redirects),
            headers=page.headers,
            body=page.body,
            truncated=page.truncated,
            encoding=page.encoding,
            elapsed_ms=round((time.monotonic() - started) * 1000),
            is_html=page.is_html,
        )

    def _timeout_error(self, trail: _Trail) -> FetchError:
        return FetchError(
            ErrorKind.TIMEOUT, self._timeout_message, url=trail.url, redirects=tuple(trail.redirects)
        )

    async def _fetch_site(
        self, target: Target, path: str, trail: _Trail, deadline: asyncio.Timeout, reading: _Reading
    ) -> _Page:
        """The domain as given, then ``www.`` + host when the name has no address."""
        try:
            return await self._fetch_domain(target.domain, path, trail, deadline, reading)
        except FetchError as exc:
            if exc.kind is not ErrorKind.DNS:
                raise
            no_address = exc.with_traceback(None)  # no traceback -> this frame -> no_address cycle for gc
        www = f"www.{target.host}" if target.port is None else f"www.{target.host}:{target.port}"
        try:
            return await self._fetch_domain(www, path, trail, deadline, reading)
        except FetchError as exc:
            if exc.kind is ErrorKind.DNS:
                raise no_address from None  # say which name the user gave, not the one we guessed
            raise

    async def _fetch_domain(
        self, domain: str, path: str, trail: _Trail, deadline: asyncio.Timeout, reading: _Reading
    ) -> _Page:
        """https first; plain http when https cannot be reached at all (refused, reset, TLS failure).

        An HTTP error status or a timeout is an answer from (or about) the site, so it is not retried
        over http; neither is a failure after a redirect, since the site chose where to send us.
        """
        https = _site_url("https", domain, path)
        try:
            await self._look_up(https, trail)
            return await self._follow(https, trail, deadline, reading)
        except FetchError as exc:
            if exc.kind not in (ErrorKind.CONNECT, ErrorKind.TLS) or exc.redirects:
                raise
            https_error = exc.with_traceback(None)  # no traceback -> this frame -> https_error cycle for gc
        try:
            return await self._follow(_site_url("http", domain, path), trail, deadline, reading)
        except FetchError as exc:
            if exc.kind is ErrorKind.CONNECT and not exc.redirects:
                raise https_error from None  # both failed to connect: the https reason is the telling one
            raise

    async def _look_up(self, url: httpx.URL, trail: _Trail) -> None:
        """Ask the resolver about a domain's first URL before requesting it. It keeps the answer for
        the request; a name without an address, a blocked one, or one whose address just refused this
        port fails here as the request would have, without the cost of making it (on shared hosting
        whose https port is closed, that is every name but the first)."""
        if self._resolver is None or _is_ip_literal(url.host):
            return
        trail.url, trail.redirects = str(url), []
        with self._translated(url, trail):
            await self._resolver.resolve(url.host, url.port or _DEFAULT_PORTS[url.scheme], _FAMILY)

    async def _follow(
        self, url: httpx.URL, trail: _Trail, deadline: asyncio.Timeout, reading: _Reading
    ) -> _Page:
        """Request `url` and follow its redirects by hand, recording the chain in `trail`.

        A loop is a URL requested again with the same cookies: a redirect back to the same URL that
        set a cookie (a "cookie check") is followed, as a browser would.
        """
        trail.redirects = []
        visited: set[tuple[str, _CookieState]] = set()
        while True:
            trail.url = str(url)
            visited.add((trail.url, _cookie_state(trail.cookies)))
            outcome = await self._request(url, trail, deadline, reading)
            if isinstance(outcome, _Page):
                return outcome
            trail.redirects.append(str(url))
            if (str(outcome), _cookie_state(trail.cookies)) in visited:
                raise self._redirect_error(f"{url} redirects back to {outcome}", trail)
            if len(trail.redirects) > MAX_REDIRECTS:
                raise self._redirect_error(f"more than {MAX_REDIRECTS} redirects (last to {outcome})", trail)
            if outcome.scheme not in _DEFAULT_PORTS:
                # Not an HTTP page we could reach: reported as a connect failure, to the URL we were sent.
                raise FetchError(
                    ErrorKind.CONNECT,
                    _one_line(f"connect: redirected to a non-HTTP URL {outcome}"),
                    url=str(outcome),
                    redirects=tuple(trail.redirects),
                )
            url = outcome

    @staticmethod
    def _redirect_error(detail: str, trail: _Trail) -> FetchError:
        return FetchError(
            ErrorKind.REDIRECT_LOOP,
            _one_line(f"redirect_loop: {detail}"),
            url=trail.url,
            redirects=tuple(trail.redirects),
        )

    async def _request(
        self, url: httpx.URL, trail: _Trail, deadline: asyncio.Timeout, reading: _Reading
    ) -> _Page | httpx.URL:
        """One URL, retried (``settings.retries`` times) after a dropped connection or a 429/503."""
        attempt = 0
        while True:
            may_retry = attempt < self._settings.retries
            try:
                with self._translated(url, trail):
                    outcome = await self._exchange(url, trail, deadline, reading, may_retry=may_retry)
            except _ConnectionLost:
                if not may_retry or _time_left(deadline) <= _BACKOFF:
                    raise
                wait = _BACKOFF
            else:
                if not isinstance(outcome, _Wait):
                    return outcome
                wait = outcome.seconds
            attempt += 1
            await asyncio.sleep(wait)

    async def _exchange(
        self, url: httpx.URL, trail: _Trail, deadline: asyncio.Timeout, reading: _Reading, *, may_retry: bool
    ) -> _Page | httpx.URL | _Wait:
        """Send one request: a redirect's target, a wait before retrying, or the page."""
        if _is_ip_literal(url.host) and (reason := self._settings.address_policy.check(url.host)):
            raise Blocked(reason)  # no resolver sees an IP literal: this is where it is checked
        request = httpx.Request("GET", url, headers={**self._headers, "Accept": reading.accept})
        if trail.cookies is not None:
            trail.cookies.set_cookie_header(request)
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            if "set-cookie" in response.headers:
                if trail.cookies is None:
                    trail.cookies = httpx.Cookies()
                trail.cookies.extract_cookies(response)
            location = response.headers.get("location", "").strip()
            if response.status_code in _REDIRECT_STATUSES and location:
                return url.join(location).copy_with(fragment=None)
            if may_retry and response.status_code in _RETRY_STATUSES:
                wait = _retry_wait(response.headers.get("retry-after"))
                if wait < _time_left(deadline):
                    return _Wait(wait)
            return await reading.read(response)
        finally:
            await response.aclose()

    async def _read_page(self, response: httpx.Response) -> _Page:
        content_type = response.headers.get("content-type")
        media = _media_type(content_type)
        if response.status_code >= 400 or (media is not None and media not in _HTML_TYPES):
            limit = min(self._settings.max_bytes, _PREFIX_BYTES)
        else:
            limit = self._settings.max_bytes
        body, truncated = await _read_body(
            response, limit, prefix_only_if=_not_html if media is None else None
        )
        is_html = media in _HTML_TYPES or (media is None and _looks_like_html(body))
        return _Page(
            url=str(response.url),
            status=response.status_code,
            headers=_joined_headers(response),
            body=body,
            truncated=truncated,
            is_html=is_html,
            encoding=decide_encoding(content_type, body) if is_html else content_type_charset(content_type),
        )

    @staticmethod
    async def _read_file(
        response: httpx.Response, *, limit: int, prefix_only_if: Callable[[bytes], bool] | None = None
    ) -> _Page:
        """A site file's body as it is, up to `limit` decoded bytes; only a prefix of an error page."""
        if response.status_code >= 400:
            limit = min(limit, _PREFIX_BYTES)
        body, truncated = await _read_body(response, limit, prefix_only_if=prefix_only_if)
        content_type = response.headers.get("content-type")
        return _Page(
            url=str(response.url),
            status=response.status_code,
            headers=_joined_headers(response),
            body=body,
            truncated=truncated,
            is_html=_media_type(content_type) in _HTML_TYPES,
            encoding=content_type_charset(content_type),
        )

    @contextlib.contextmanager
    def _translated(self, url: httpx.URL, trail: _Trail) -> Iterator[None]:
        """The one place where third-party and OS errors become FetchError (cancellation passes through)."""
        try:
            yield
        except FetchError:
            raise
        except Exception as exc:
            chain = _exception_chain(exc)
            kind, detail, lost = _classify(chain, url)
            if self._resolver is not None and _is_refusal(chain):
                self._resolver.refused(url.host, url.port or _DEFAULT_PORTS[url.scheme])
            message = self._timeout_message if kind is ErrorKind.TIMEOUT else _one_line(f"{kind}: {detail}")
            error = _ConnectionLost if lost else FetchError
            # The libraries' frames keep the exceptions they raise (aiohappyeyeballs its list of
            # attempts), so each failed connection would be a cycle of frames for the garbage collector:
            # a tenth of a batch's CPU time. Their tracebacks tell users nothing; dropping them lets
            # reference counting free the frames at once.
            for cause in chain:
                cause.__traceback__ = None
            raise error(kind, message, url=str(url), redirects=tuple(trail.redirects)) from exc


def _aiohttp_transport(concurrency: int, resolver: SiteResolver) -> AiohttpTransport:
    """The default transport: httpx on aiohttp sessions built inside the running loop, one per domain
    scanned (Fetcher.site) and one for requests made outside a domain's scan."""
    ssl_context = httpx.create_ssl_context()  # verifying, certifi's CA bundle; loaded once per batch

    def session(limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit,
            limit_per_host=0,  # every domain is a different host; the global limit is what matters
            family=_FAMILY,
            use_dns_cache=False,  # the resolver has its own, per name rather than per name and port
            keepalive_timeout=5,  # a homepage rarely reuses a connection beyond its own redirects
            ssl=ssl_context,
            resolver=resolver,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),  # the domain's deadline bounds every request
            auto_decompress=False,
            trust_env=False,
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
            max_headers=_MAX_HEADERS,
        )

    # One connection per worker at a time, plus headroom for connections still being released.
    return AiohttpTransport(session, limit=concurrency + max(2, concurrency // 10))


def _cookie_state(cookies: httpx.Cookies | None) -> _CookieState:
    return (
        frozenset()
        if cookies is None
        else frozenset((c.domain, c.path, c.name, c.value) for c in cookies.jar)
    )


def _site_url(scheme: str, domain: str, path: str = "/") -> httpx.URL:
    url = f"{scheme}://{domain}{path}"
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchError(
            ErrorKind.CONNECT, _one_line(f"connect: invalid address {domain!r}"), url=url
        ) from exc


def _request_url(url: str) -> httpx.URL:
    """`url` as httpx reads it; FetchError (connect) for what is no http(s) URL httpx can request."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchError(ErrorKind.CONNECT, _one_line(f"connect: invalid URL {url!r}"), url=url) from exc
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise FetchError(ErrorKind.CONNECT, _one_line(f"connect: not an http(s) URL {url!r}"), url=url)
    return parsed.copy_with(fragment=None) if parsed.fragment else parsed


def _joined_headers(response: httpx.Response) -> dict[str, str]:
    """Lower-case names; a repeated header's values joined with ", "."""
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _time_left(deadline: asyncio.Timeout) -> float:
    when = deadline.when()
    return float("inf") if when is None else when - asyncio.get_running_loop().time()


def _retry_wait(retry_after: str | None) -> float:
    """Retry-After in seconds, shortened to _MAX_RETRY_AFTER; the short backoff when absent or a date."""
    try:
        seconds = int(retry_after or "")
    except ValueError:
        return _BACKOFF
    return min(float(max(seconds, 0)), _MAX_RETRY_AFTER)


# --- error classification ---------------------------------------------------------------------------


def _classify(chain: list[BaseException], url: httpx.URL) -> tuple[ErrorKind, str, bool]:
    """(kind, one-line detail, whether the connection was lost and a retry may help) of an exception,
    given as its chain (:func:`_exception_chain`: the exception first).

    The original exceptions (ssl, socket, OSError, aiohttp) are searched first, most specific kind
    first; the httpx exception's own type is used only when none of them is on the chain (httpcore
    and MockTransport raise httpx types).
    """
    exc = chain[0]
    where = f"{url.host}:{url.port or _DEFAULT_PORTS.get(url.scheme, '')}"
    if (blocked := _find(chain, Blocked)) is not None:
        return ErrorKind.BLOCKED, blocked.reason, False
    if _find(chain, KnownRefused) is not None:  # said as the refusal it stands for
        return ErrorKind.CONNECT, f"{os.strerror(errno.ECONNREFUSED).lower()} ({where})", False
    if (cert := _find(chain, ssl.SSLCertVerificationError)) is not None:
        reason = getattr(cert, "verify_message", None) or _ssl_reason(cert)
        return ErrorKind.TLS, f"certificate verify failed: {reason} ({where})", False
    if (tls := _find(chain, ssl.SSLError)) is not None:
        return ErrorKind.TLS, f"handshake failed: {_ssl_reason(tls)} ({where})", False
    if _find(chain, socket.gaierror) is not None or _find(chain, aiohttp.ClientConnectorDNSError) is not None:
        return ErrorKind.DNS, _lookup_failure(chain, url.host), False
    if _find(chain, TimeoutError) is not None:
        return ErrorKind.TIMEOUT, "", False
    if (os_error := _find_os_error(chain)) is not None:
        if isinstance(os_error, ConnectionResetError | BrokenPipeError | ConnectionAbortedError) or (
            os_error.errno in _RESET_ERRNOS
        ):
            return ErrorKind.CONNECT, f"connection reset ({where})", True
        reason = os.strerror(os_error.errno).lower() if os_error.errno else str(os_error) or "network error"
        return ErrorKind.CONNECT, f"{reason} ({where})", False
    if _find(chain, aiohttp.ServerDisconnectedError) is not None:
        return ErrorKind.CONNECT, f"server disconnected ({where})", True
    if _find(chain, aiohttp.ClientPayloadError) is not None:
        return ErrorKind.CONNECT, f"connection lost while reading the body ({where})", True
    if (bad := _find(chain, HttpProcessingError)) is not None:
        return ErrorKind.CONNECT, f"invalid HTTP response: {bad.message} ({where})", False
    if isinstance(exc, httpx.TimeoutException):
        return ErrorKind.TIMEOUT, "", False
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return ErrorKind.CONNECT, f"{str(exc).rstrip('.').lower() or 'connection lost'} ({where})", True
    if isinstance(exc, httpx.HTTPError | aiohttp.ClientError):
        return ErrorKind.CONNECT, f"{str(exc).rstrip('.') or type(exc).__name__} ({where})", False
    return ErrorKind.CONNECT, f"unexpected {type(exc).__name__}: {exc} ({where})", False


def _lookup_failure(chain: list[BaseException], host: str) -> str:
    """Why looking `host` up failed. Nearly always the name has no address; but a resolver that did
    not answer, or a lookup that could not even start (the process out of file descriptors: its
    errno comes through as a plain OSError), says nothing about the site and must not read as if it
    did."""
    if (gai := _find(chain, socket.gaierror)) is not None:
        if gai.errno == socket.EAI_AGAIN:
            return f"no answer from the resolver for {host} (a temporary failure)"
        return f"no address for {host}"
    local = _find_os_error(chain)
    if local is not None and local.errno:
        return f"the lookup of {host} failed: {os.strerror(local.errno).lower()}"
    return f"no address for {host}"


def _is_ip_literal(host: str) -> bool:
    if not host or not (host[-1].isdigit() or ":" in host):
        return False  # a name: its last label is a TLD, never all digits (the cheap answer for nearly all)
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what led to it: the explicit cause, else the context even when suppressed (httpcore
    re-raises its errors ``from None``), else an exception group's first member (anyio's attempts)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
        if current is None and isinstance(chain[-1], BaseExceptionGroup):
            current = chain[-1].exceptions[0]
    return chain


def _find(chain: list[BaseException], kind: type[_E]) -> _E | None:
    """The deepest exception of `kind`: the original, not a wrapper that subclasses it (aiohttp's
    ClientConnectorCertificateError is an ssl.SSLCertVerificationError without its details)."""
    return next((e for e in reversed(chain) if isinstance(e, kind)), None)


def _is_refusal(chain: list[BaseException]) -> bool:
    os_error = _find_os_error(chain)
    return os_error is not None and os_error.errno == errno.ECONNREFUSED


def _find_os_error(chain: list[BaseException]) -> OSError | None:
    """The most informative OSError on the chain: the first with an errno, else the first."""
    os_errors = [e for e in chain if isinstance(e, OSError)]
    return next((e for e in os_errors if e.errno), os_errors[0] if os_errors else None)


def _ssl_reason(error: ssl.SSLError) -> str:
    reason = getattr(error, "reason", None)
    return reason.lower().replace("_", " ") if isinstance(reason, str) else str(error)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[: limit - 3]}..."


# --- body ---------------------------------------------------------------------------------------------


class _Decoder:
    """Content-Encoding decoding that never returns more than it is asked for.

    gzip and deflate (zlib-wrapped, or raw as some servers send it) are inflated with ``max_length``,
    so memory stays at the cap whatever the compression ratio. Other codings were not advertised;
    their bytes are passed through as they are.
    """

    def __init__(self, content_encoding: str | None) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._zlib: zlib._Decompress | None = None
        self._raw_deflate_fallback = False
        self.failed = False
        if codings in (["gzip"], ["x-gzip"]):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif codings == ["deflate"]:
            self._zlib = zlib.decompressobj()
            self._raw_deflate_fallback = True

    def decode(self, data: bytes, max_out: int) -> bytes:
        """At most `max_out` (>= 1) decoded bytes of `data`; when exactly that many come back the
        caller has hit its cap and stops, so input left unconsumed never matters."""
        if self._zlib is None:
            return data[:max_out]
        if self.failed:
            return b""
        try:
            decoded = self._zlib.decompress(data, max_out)
        except zlib.error:
            if self._raw_deflate_fallback:
                self._raw_deflate_fallback = False
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.decode(data, max_out)
            self.failed = True  # corrupt: keep what was decoded so far
            return b""
        self._raw_deflate_fallback = False  # only the first chunk tells zlib-wrapped from raw deflate
        return decoded


async def _read_body(
    response: httpx.Response, limit: int, *, prefix_only_if: Callable[[bytes], bool] | None
) -> tuple[bytes, bool]:
    """Read at most `limit` decoded bytes; (body, truncated). When `prefix_only_if` says so of the
    first _SNIFF_BYTES, stop after a short prefix (_PREFIX_BYTES)."""
    preread = response.is_stream_consumed
    decoder = _Decoder(None if preread else response.headers.get("content-encoding"))
    body = bytearray()
    async with contextlib.aclosing(_raw_chunks(response, preread=preread)) as chunks:
        async for raw in chunks:
            body += decoder.decode(raw, limit - len(body) + 1)
            if prefix_only_if is not None and len(body) >= _SNIFF_BYTES:
                if prefix_only_if(bytes(body[:_SNIFF_BYTES])):
                    limit = min(limit, _PREFIX_BYTES)
                prefix_only_if = None
            if len(body) > limit or decoder.failed:
                del body[limit:]
                return bytes(body), True
    return bytes(body), False


async def _raw_chunks(response: httpx.Response, *, preread: bool) -> AsyncGenerator[bytes, None]:
    """The body as it came off the wire, or, from a transport that hands over responses already read
    (MockTransport given ``content=``), the content httpx has already decoded."""
    if preread:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def _media_type(content_type: str | None) -> str | None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media or None


def _not_html(head: bytes) -> bool:
    """An untyped homepage body that does not start like HTML is not worth reading past a prefix."""
    return not _looks_like_html(head)


def _looks_like_html(body: bytes | bytearray) -> bool:
    head = bytes(body[:_SNIFF_BYTES])
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        head = head.decode("utf-16", "replace").encode("utf-8", "replace")
    head = head.removeprefix(codecs.BOM_UTF8).lstrip(_WHITESPACE)
    return _HTML_START.match(head) is not None
