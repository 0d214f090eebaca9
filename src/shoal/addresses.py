"""Addresses of peers and nodes, and their compact form (BEP 5, 7, 11, 23): one type, one codec.

The compact form of an address is its IP in network order, 4 bytes for IPv4 and 16 for IPv6,
then its port in 2 bytes; a compact list is such entries back to back, one family per list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = tuple[str, int]
"""A host (an IP address as text, or a host name) and a port."""

IPV4_ENTRY = 6
IPV6_ENTRY = 18


def pack_ip(host: str) -> bytes:
    """An IP address as 4 or 16 bytes; an IPv4-mapped IPv6 address as IPv4, a zone dropped.

    Raises ValueError if host is not an IP address.
    """
    ip = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed


def join(packed_ip: bytes, port: int) -> bytes:
    """A compact entry from an IP already packed and a port."""
    return packed_ip + port.to_bytes(2, "big")


def split(entry: bytes) -> tuple[bytes, int]:
    """The packed IP and the port of one compact entry."""
    return entry[:-2], int.from_bytes(entry[-2:], "big")


def pack(address: Address) -> bytes:
    """One address in compact form (6 or 18 bytes); ValueError if its host is not an IP."""
    host, port = address
    return join(pack_ip(host), port)


def pack_all(addresses: Iterable[Address]) -> tuple[bytes, bytes]:
    """Compact lists of the IPv4 and of the IPv6 addresses among addresses."""
    v4 = bytearray()
    v6 = bytearray()
    for address in addresses:
        entry = pack(address)
        (v4 if len(entry) == IPV4_ENTRY else v6).extend(entry)
    return bytes(v4), bytes(v6)


def unpack(data: bytes, *, ipv6: bool, limit: int | None = None) -> list[Address]:
    """The addresses of a compact list, at most limit of them; entries with port 0 are skipped
    and a trailing partial entry is ignored."""
    step = IPV6_ENTRY if ipv6 else IPV4_ENTRY
    end = len(data) - len(data) % step
    if limit is not None:
        end = min(end, limit * step)
    found = []
    for start in range(0, end, step):
        port = int.from_bytes(data[start + step - 2 : start + step], "big")
        if port:
            found.append((str(ipaddress.ip_address(data[start : start + step - 2])), port))
    return found
