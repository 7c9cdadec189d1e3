"""The fetcher's resolver: the address policy on every answer, one lookup per name whatever the port,
and no second attempt at an address and port that just refused a connection.

The system resolver is replaced by a fixed one that counts lookups, and the clock by a hand-moved one,
so nothing here waits or touches a network.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from domainscan.netpolicy import AddressPolicy, parse_networks
from domainscan.resolver import Blocked, KnownRefused, SiteResolver


class FixedResolver:
    """Stands in for the system resolver: answers each name from a table, and counts the lookups."""

    def __init__(self, **names: tuple[str, ...]) -> None:
        self.names = names
        self.lookups: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        self.lookups.append((host, port))
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.names[host]
        ]

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver_for(
    policy: AddressPolicy | None = None, **kwargs: Any
) -> tuple[SiteResolver, FixedResolver, Clock]:
    clock = Clock()
    resolver = SiteResolver(policy or AddressPolicy(parse_networks(["127.0.0.0/8"])), clock=clock, **kwargs)
    system = FixedResolver(
        **{"a.test": ("127.0.0.2",), "b.test": ("127.0.0.2",), "c.test": ("127.0.0.2", "127.0.0.3")}
    )
    resolver._resolver = system  # type: ignore[assignment]
    return resolver, system, clock


async def hosts(resolver: SiteResolver, name: str, port: int) -> list[tuple[str, int]]:
    return [(r["host"], r["port"]) for r in await resolver.resolve(name, port)]


@pytest.mark.parametrize(
    ("addresses", "allowed"),
    [
        (("93.184.216.34", "10.0.0.1"), ["93.184.216.34"]),  # a mixed answer keeps only the public one
        (("127.0.0.1",), None),  # a rebinding answer: nothing public left
        (("::ffff:169.254.169.254", "fe80::1"), None),
    ],
)
async def test_the_resolver_drops_the_addresses_the_policy_refuses(
    addresses: tuple[str, ...], allowed: list[str] | None
) -> None:
    resolver = SiteResolver(AddressPolicy())
    resolver._resolver = FixedResolver(**{"rebind.test": addresses})  # type: ignore[assignment]
    if allowed is None:
        with pytest.raises(Blocked, match=r"^rebind\.test: "):
            await resolver.resolve("rebind.test", 80)
    else:
        assert [r["host"] for r in await resolver.resolve("rebind.test", 80)] == allowed


async def test_a_name_is_looked_up_once_for_every_port() -> None:
    resolver, system, _ = resolver_for()
    assert await hosts(resolver, "a.test", 443) == [("127.0.0.2", 443)]
    assert await hosts(resolver, "a.test", 80) == [("127.0.0.2", 80)]  # the answer, at the port asked for
    assert await hosts(resolver, "a.test", 443) == [("127.0.0.2", 443)]
    assert system.lookups == [("a.test", 443)]


async def test_a_name_is_looked_up_again_after_its_ttl_and_failures_are_not_kept() -> None:
    resolver, system, clock = resolver_for(ttl=300)
    await resolver.resolve("a.test", 443)
    clock.now += 301
    await resolver.resolve("a.test", 443)
    for _ in range(2):
        with pytest.raises(socket.gaierror):
            await resolver.resolve("nodns.test", 443)
    assert system.lookups == [("a.test", 443), ("a.test", 443), ("nodns.test", 443), ("nodns.test", 443)]


async def test_only_so_many_names_are_kept() -> None:
    resolver, system, _ = resolver_for(max_names=2)
    for name in ("a.test", "b.test", "c.test", "a.test"):  # a.test was the oldest when c.test came
        await resolver.resolve(name, 80)
    assert [name for name, _ in system.lookups] == ["a.test", "b.test", "c.test", "a.test"]


async def test_an_address_and_port_that_refused_are_not_tried_again_for_another_name() -> None:
    resolver, _, clock = resolver_for(refusal_ttl=60)
    await resolver.resolve("a.test", 443)
    resolver.refused("a.test", 443)
    with pytest.raises(KnownRefused, match=r"^b\.test:443$"):
        await resolver.resolve("b.test", 443)  # another name on the same address
    assert await hosts(resolver, "b.test", 80) == [("127.0.0.2", 80)]  # another port is another matter
    # c.test has a second address that never refused: it is still worth a try.
    assert await hosts(resolver, "c.test", 443) == [("127.0.0.2", 443), ("127.0.0.3", 443)]
    clock.now += 61
    assert await hosts(resolver, "b.test", 443) == [("127.0.0.2", 443)]  # the memory is short


async def test_a_refusal_for_a_name_it_never_answered_is_ignored() -> None:
    resolver, _, _ = resolver_for()
    resolver.refused("127.0.0.2", 443)  # an IP-literal URL: no resolver was asked
    assert await hosts(resolver, "a.test", 443) == [("127.0.0.2", 443)]
