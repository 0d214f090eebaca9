"""The one codec of compact addresses: round trips and hostile input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import addresses

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str)
ports = st.integers(1, 65535)


@given(st.lists(st.tuples(st.one_of(ipv4, ipv6), ports), max_size=50))
def test_pack_all_then_unpack_gives_the_addresses_back(found):
    v4, v6 = addresses.pack_all(found)
    back = addresses.unpack(v4, ipv6=False) + addresses.unpack(v6, ipv6=True)
    normal = [(str(ipaddress.ip_address(host)), port) for host, port in found]
    assert sorted(back) == sorted(normal)


@given(st.binary(max_size=400), st.booleans(), st.integers(0, 30))
def test_unpack_takes_any_bytes_and_honours_the_limit(data, ipv6, limit):
    found = addresses.unpack(data, ipv6=ipv6, limit=limit)
    assert len(found) <= limit
    assert all(0 < port < 65536 for _host, port in found)


def test_mapped_addresses_and_zones_pack_as_plain_ones():
    assert addresses.pack(("::ffff:192.0.2.1", 6881)) == bytes([192, 0, 2, 1, 0x1A, 0xE1])
    assert len(addresses.pack(("fe80::1%eth0", 1))) == addresses.IPV6_ENTRY
    assert addresses.split(addresses.pack(("192.0.2.1", 80))) == (bytes([192, 0, 2, 1]), 80)


def test_host_names_have_no_compact_form():
    with pytest.raises(ValueError):
        addresses.pack(("example.org", 80))
