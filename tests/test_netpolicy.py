"""The address policy: nothing but globally routable unicast by default, --allow-net opens ranges."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domainscan.errors import UsageError
from domainscan.netpolicy import AddressPolicy, parse_networks

DEFAULT = AddressPolicy()


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.10.10.10", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "private"),  # reserved, listed by ipaddress among the private ranges
        ("255.255.255.255", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("192.0.2.7", "private"),  # documentation range
        ("2001:db8::1", "private"),
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(host: str, reason: str) -> None:
    message = DEFAULT.check(host)
    assert message is not None
    assert reason in message
    assert message.startswith(host)
    assert "--allow-net" in message


@pytest.mark.parametrize("host", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(host: str) -> None:
    assert DEFAULT.check(host) is None


def test_allow_net_opens_only_its_range() -> None:
    policy = AddressPolicy(parse_networks(["127.0.0.0/8", "fd00::/8"]))
    assert policy.check("127.0.0.3") is None
    assert policy.check("::ffff:127.0.0.1") is None  # the mapped form of an allowed address
    assert policy.check("fd12::1") is None
    assert policy.check("10.0.0.1") is not None
    assert policy.check("169.254.169.254") is not None
    assert policy.check("::1") is not None  # 127.0.0.0/8 says nothing about IPv6 loopback


def test_a_bare_address_is_a_one_address_network() -> None:
    policy = AddressPolicy(parse_networks(["10.1.2.3"]))
    assert policy.check("10.1.2.3") is None
    assert policy.check("10.1.2.4") is not None


@pytest.mark.parametrize("value", ["", "localhost", "10.0.0.0/33", "1.2.3"])
def test_bad_allow_net_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="--allow-net"):
        parse_networks([value])


def test_names_are_not_addresses() -> None:
    assert DEFAULT.check("example.com") == "'example.com' is not an IP address"


def _expected_allowed(address: IPv4Address | IPv6Address) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (address.is_multicast or address.is_reserved)


@given(st.ip_addresses())
def test_policy_agrees_with_ipaddress(address: IPv4Address | IPv6Address) -> None:
    assert (DEFAULT.check(str(address)) is None) == _expected_allowed(address)


@given(st.ip_addresses(v=4))
def test_mapped_ipv6_is_judged_like_its_ipv4(address: IPv4Address) -> None:
    mapped = ip_address(f"::ffff:{address}")
    assert (DEFAULT.check(str(mapped)) is None) == (DEFAULT.check(str(address)) is None)
