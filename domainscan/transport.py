"""httpx requests over an aiohttp session: httpx's API on aiohttp's sockets, with nothing in between.

Why our own and not the ``httpx-aiohttp`` package: a homepage fetch is a few hundred microseconds of
Python on top of the kernel's work, so every layer shows. That package builds a ``ClientTimeout`` per
request, converts the request's headers through httpx's ``Headers`` again, reads bodies in 16 KiB
slices through two generators, and maps every ``aiohttp.ClientConnectionError`` to
``httpx.ConnectTimeout``, which hides why a connection failed. Here the session's own (disabled)
timeouts apply, since the fetcher's deadline bounds every request; the body comes off aiohttp's buffer
as it arrives; and aiohttp's exceptions pass through unchanged for ``fetch._classify`` to read.

The session is made on first use, inside the running event loop, as aiohttp requires.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one aiohttp session (its pool, DNS cache and limits)."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession]) -> None:
        self._make_session = session
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._make_session()
        response = await self._session.request(
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
