"""A parse worker process: ``python -m domainscan.parseworker FD PARENT_PID``.

It parses the homepages that arrive on its socket (see :mod:`domainscan.parsing`, the main process's
side) and answers with their facts. It is kept apart from that side because it needs none of the event
loop: importing asyncio (and the ssl it brings) took a worker from 31 to 37 MB at its peak on the bench
farm.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping

from domainscan.models import PageFacts

HEADER = 4  # bytes of the big-endian length before each message
_PARENT_POLL = 1.0  # seconds between a worker's looks at whether its parent is still there
_INBOX_BYTES = 4 << 20  # pages a worker reads ahead of its parsing, at most (see _Inbox)


def page_facts(
    body: bytes,
    url: str,
    headers: Mapping[str, str],
    encoding: str | None,
    phone_region: str | None,
    host: str,
) -> PageFacts:
    """The facts of one homepage (what runs in a worker). National phone numbers are read in
    `phone_region`, by default the one the scanned `host`'s country TLD suggests."""
    from domainscan.extract import extract, phone_region_for

    region = phone_region or phone_region_for(host)
    return extract(body, url, headers, encoding=encoding, phone_region=region)


def serve(connection: socket.socket, parent: int) -> None:
    """A worker's life (``python -m domainscan.parseworker FD PARENT_PID``): parse what arrives on
    `connection` until it closes. The main process closing it first, even mid-answer (a batch that
    stopped at once), is the normal end too: nothing to say about it on the shared stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    _warm_up()
    with connection, contextlib.suppress(ConnectionError):
        inbox = _Inbox(connection, _INBOX_BYTES)
        connection.sendall(bytes(HEADER))  # an empty message: ready
        while (message := inbox.get()) is not None:
            request_id, args = pickle.loads(message)
            answer = pickle.dumps((request_id, page_facts(*args)), protocol=pickle.HIGHEST_PROTOCOL)
            connection.sendall(len(answer).to_bytes(HEADER, "big") + answer)


class _Inbox:
    """A worker's pages, read off its socket by a thread as soon as they arrive, ahead of parsing.

    Why: the main process writes each page into the socket's kernel buffer, which holds a few hundred
    KiB by default (a dozen pages). Once it is full, the rest waits in the event loop's own buffer until
    the loop next gets round to the socket, and meanwhile this worker, having parsed what it had, sits
    idle: on the 2000-site webfarm the worker waited for pages half the time and the scan took a third
    longer (bench/). Up to ``limit`` bytes of pages are held here; beyond that the reading waits for the
    parsing, and the main process's buffers hold the rest as before.
    """

    def __init__(self, connection: socket.socket, limit: int) -> None:
        self._connection = connection
        self._limit = limit
        self._messages: collections.deque[bytes] = collections.deque()
        self._held = 0  # bytes in _messages
        self._closed = False
        self._changed = threading.Condition()
        threading.Thread(target=self._fill, name="inbox", daemon=True).start()

    def get(self) -> bytes | None:
        """The next page's message; None once the main process closed the socket (it wants no more
        answers, so whatever is still held is dropped)."""
        with self._changed:
            while not self._messages and not self._closed:
                self._changed.wait()
            if self._closed:
                return None
            message = self._messages.popleft()
            self._held -= len(message)
            self._changed.notify_all()
            return message

    def _fill(self) -> None:
        try:
            while (header := _receive(self._connection, HEADER)) is not None:
                message = _receive(self._connection, int.from_bytes(header, "big"))
                if message is None:
                    break
                with self._changed:
                    while self._held >= self._limit and not self._closed:
                        self._changed.wait()
                    self._messages.append(message)
                    self._held += len(message)
                    self._changed.notify_all()
        except OSError:  # reset by the main process: the same end as a close
            pass
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()


def _receive(connection: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None when the other end closed first."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = connection.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buffer)


def _exit_with_parent(parent: int) -> None:
    """A worker of a main process that was killed (SIGKILL, a crash) would otherwise wait forever."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(0)


def _warm_up() -> None:
    """Import and load what parsing needs before the first page arrives."""
    from domainscan import contacts, tech

    tech.fingerprints()
    contacts.emails([], ["warm@example.com"])


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]))
