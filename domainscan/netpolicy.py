"""The address policy: which IP addresses a scan may connect to (the SSRF guard).

A scanner fetches URLs that strangers control: a homepage may redirect to the cloud metadata service at
169.254.169.254, and a name may resolve to 10.0.0.5 or, after a first harmless answer, rebind to
127.0.0.1. So the policy is applied to every address the client is about to connect to, after DNS
resolution and on every redirect hop, never to the name. By default only globally routable unicast
addresses pass; `--allow-net CIDR` opens ranges for people who scan their own networks.

Pure: `ipaddress` only, so it is tested exhaustively without a network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from domainscan.errors import UsageError

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)

# Why an address is refused, checked in this order; the first true one names the reason.
_REASONS: tuple[tuple[str, str], ...] = (
    ("is_unspecified", "an unspecified address"),
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address (cloud metadata services live here)"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private address"),
    ("is_reserved", "a reserved address"),
)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """`--allow-net` values as networks; a bare address means just that address."""
    networks = []
    for value in values:
        try:
            networks.append(ip_network(value.strip(), strict=False))
        except ValueError:
            raise UsageError(f"--allow-net {value!r} is not a network like 127.0.0.0/8 or ::1/128") from None
    return tuple(networks)


def _unwrapped(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:10.0.0.1), else the address."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refusal(address: Address) -> str | None:
    """Why `address` must not be contacted by default, or None when it is globally routable unicast."""
    address = _unwrapped(address)
    for attribute, reason in _REASONS:
        if getattr(address, attribute):
            return reason
    if isinstance(address, IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def _within(address: Address, network: Network) -> bool:
    """`address in network`, also for an IPv4-mapped address; never across IP versions."""
    return any(a.version == network.version and a in network for a in (address, _unwrapped(address)))


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Refuses non-public addresses unless an allowed network contains them."""

    allow: tuple[Network, ...] = ()

    def check(self, host: str) -> str | None:
        """None when `host` (an IP address literal) may be contacted, else a one-line reason.

        Remembered for the most recent addresses: a batch meets the same ones again and again (shared
        hosting, CDNs), and the checks cost more than the lookup of a remembered answer."""
        return _checked(self, host)

    def _check(self, host: str) -> str | None:
        try:
            address = ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return f"{host!r} is not an IP address"
        if any(_within(address, network) for network in self.allow):
            return None
        reason = refusal(address)
        if reason is None:
            return None
        return f"{host} is {reason}; use --allow-net to scan it"


@lru_cache(maxsize=4096)
def _checked(policy: AddressPolicy, host: str) -> str | None:
    return policy._check(host)
