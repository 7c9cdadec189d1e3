"""Names to addresses for the fetcher: the address policy, and two short memories for one batch.

Why the fetcher has its own resolver around aiohttp's:

- **The address policy on the address connected to.** Every address the
  :class:`~domainscan.netpolicy.AddressPolicy` refuses is dropped before aiohttp connects, so a name that
  resolves (or rebinds) to 10.x or 169.254.169.254 is ``blocked`` (:class:`Blocked`).
- **One lookup per name, whatever the port.** A homepage is tried over https and then over http, and its
  robots.txt and sitemaps follow; aiohttp's own cache is keyed by name *and* port, so it looked the name up
  again for port 80. Here the addresses of a name are kept for ``ttl`` seconds (at most ``max_names`` of
  them, the oldest forgotten first, so memory stays flat however long the batch) and serve every port.
  A lookup through the system resolver costs a thread hop and, with a large /etc/hosts, more CPU than
  the request itself.
- **Ports that refused a connection.** A refused TCP connection (a reset to the SYN) says nothing
  listens on that address and port, whichever name led there. Shared hosting puts thousands of names on
  one address; when its port 443 refuses, every one of them would pay a refused https attempt before its
  http fallback. So an address and port that refused within ``refusal_ttl`` seconds are not tried again
  for another name: :class:`KnownRefused` is raised at once, and the fetcher reports it exactly as the
  refusal itself. Only refusals are remembered: a timeout or a TLS failure may well be name-specific.
"""

from __future__ import annotations

import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from domainscan.netpolicy import AddressPolicy

DNS_TTL = 300.0  # seconds a name's addresses are reused
REFUSAL_TTL = 60.0  # seconds an address and port that refused a connection are not tried again
MAX_NAMES = 4096  # names (and refused address/port pairs) remembered at once

_K = TypeVar("_K")
_V = TypeVar("_V")


class Blocked(Exception):
    """The policy refuses every address of a name. Not an OSError, so aiohttp lets it through
    instead of turning it into a DNS error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KnownRefused(Exception):
    """Every address of a name refused a connection on this port moments ago. Not an OSError, for the
    same reason as :class:`Blocked`."""


class SiteResolver(AbstractResolver):
    """The system resolver (so /etc/hosts counts), minus the addresses the policy refuses, with a
    per-name cache and a memory of refused ports (see the module's docstring). One per batch."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        ttl: float = DNS_TTL,
        refusal_ttl: float = REFUSAL_TTL,
        max_names: int = MAX_NAMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._resolver: AbstractResolver = ThreadedResolver()
        self._ttl = ttl
        self._refusal_ttl = refusal_ttl
        self._max = max_names
        self._clock = clock
        # name -> (when looked up, the family asked for, the allowed answers as the system gave them)
        self._names: OrderedDict[str, tuple[float, int, list[ResolveResult]]] = OrderedDict()
        self._refused: OrderedDict[tuple[str, int], float] = OrderedDict()  # (address, port) -> when

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        allowed = self._cached(host, family)
        if allowed is None:
            allowed = await self._lookup(host, port, family)
        if self._refused and all(self._is_refused(r["host"], port) for r in allowed):
            raise KnownRefused(f"{host}:{port}")
        return [r if r["port"] == port else {**r, "port": port} for r in allowed]

    def refused(self, host: str, port: int) -> None:
        """A connection to `host` (a name this resolver answered for) on `port` was refused: remember
        its addresses on that port. A name it never answered for (an IP literal) is ignored."""
        entry = self._names.get(host)
        if entry is not None:
            now = self._clock()
            for answer in entry[2]:
                self._remember(self._refused, (answer["host"], port), now)

    async def close(self) -> None:
        await self._resolver.close()

    async def _lookup(self, host: str, port: int, family: socket.AddressFamily) -> list[ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        allowed = [r for r in answers if self._policy.check(r["host"]) is None]
        if not allowed:
            reason = self._policy.check(answers[0]["host"]) if answers else "it has no address"
            raise Blocked(f"{host}: {reason}")
        self._remember(self._names, host, (self._clock(), family, allowed))
        return allowed

    def _cached(self, host: str, family: int) -> list[ResolveResult] | None:
        entry = self._names.get(host)
        if entry is None:
            return None
        when, asked, allowed = entry
        if asked != family or self._clock() - when > self._ttl:
            del self._names[host]
            return None
        return allowed

    def _is_refused(self, address: str, port: int) -> bool:
        when = self._refused.get((address, port))
        if when is None:
            return False
        if self._clock() - when > self._refusal_ttl:
            del self._refused[(address, port)]
            return False
        return True

    def _remember(self, memory: OrderedDict[_K, _V], key: _K, value: _V) -> None:
        memory[key] = value
        memory.move_to_end(key)
        while len(memory) > self._max:
            memory.popitem(last=False)
