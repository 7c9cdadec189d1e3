"""httpx requests over an aiohttp session: httpx's API on aiohttp's sockets, with nothing in between.

Why our own and not the ``httpx-aiohttp`` package: a homepage fetch is a few hundred microseconds of
Python on top of the kernel's work, so every layer shows. That package builds a ``ClientTimeout`` per
request, converts the request's headers through httpx's ``Headers`` again, reads bodies in 16 KiB
slices through two generators, and maps every ``aiohttp.ClientConnectionError`` to
``httpx.ConnectTimeout``, which hides why a connection failed. Here the session's own (disabled)
timeouts apply, since the fetcher's deadline bounds every request; the body comes off aiohttp's buffer
as it arrives; and aiohttp's exceptions pass through unchanged for ``fetch._classify`` to read.

Sessions are made inside the running event loop, as aiohttp requires. Each domain's scan has a session
of its own (:meth:`AiohttpTransport.site`): its requests (redirects, robots.txt, sitemaps) reuse each
other's connections, and all of them are closed when the scan ends. One pool for the whole batch kept
every connection open, idle, for its keep-alive time after its domain was done: over 2000 file
descriptors at once on the 2000-site farm, so that under the usual limit of 1024 per process most
lookups and connections of a batch failed (EMFILE), and memory went to sockets nobody would use again.
Requests made outside a site scope share one session, made on first use.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar

import aiohttp
import httpx
from yarl import URL


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp buffers it; closing releases the connection."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


# The session of the domain whose scan the current task (and the tasks it starts) is making.
_site_session: ContextVar[aiohttp.ClientSession | None] = ContextVar("site_session", default=None)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through aiohttp sessions: a domain's own inside :meth:`site`, else one
    shared session. `session(limit)` makes a session whose pool holds at most `limit` connections
    (0: no limit of its own)."""

    def __init__(self, session: Callable[[int], aiohttp.ClientSession], *, limit: int) -> None:
        self._make_session = session
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def site(self) -> AsyncIterator[None]:
        """The requests made inside (by this task and the tasks it starts) share a session of their
        own, whose connections are all closed on leaving. No limit of its own: a domain's requests in
        flight are few, and the batch's concurrency bounds the domains."""
        session = self._make_session(0)
        token = _site_session.set(session)
        try:
            yield
        finally:
            _site_session.reset(token)
            await session.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = _site_session.get()
        if session is None:
            if self._session is None:
                self._session = self._make_session(self._limit)
            session = self._session
        response = await session.request(
            request.method,
            URL(str(request.url), encoded=True),  # httpx has already quoted it
            headers=request.headers.multi_items(),
            data=request.content or None,
            allow_redirects=False,
        )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
