"""Addresses of peers and nodes, and their compact form (BEP 5, 7, 11, 23): one type, one codec.

The compact form of an address is its IP in network order, 4 bytes for IPv4 and 16 for IPv6,
then its port in 2 bytes; a compact list is such entries back to back, one family per list.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

Address = tuple[str, int]
"""A host (an IP address as text, or a host name) and a port."""

IPV4_ENTRY = 6
IPV6_ENTRY = 18
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
_IPV6_LOOPBACK = bytes(15) + b"\x01"


def pack_ip(host: str) -> bytes:
    """An IP address as 4 or 16 bytes; an IPv4-mapped IPv6 address as IPv4, a zone dropped.

    Raises ValueError if host is not an IP address.
    """
    # socket's parsers: several times faster than ipaddress, and PEX packs every minute.
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return packed[12:] if packed.startswith(_MAPPED_PREFIX) else packed


def is_loopback_ip(packed_ip: bytes) -> bool:
    """Whether a packed IP is a loopback address (127.0.0.0/8, ::1)."""
    return packed_ip[:1] == b"\x7f" if len(packed_ip) == 4 else packed_ip == _IPV6_LOOPBACK


def source_key(packed_ip: bytes, port: int) -> bytes:
    """What per-source limits count by: the IP, but on loopback, where tests and the demo run
    many nodes on one IP, the IP and the port."""
    return join(packed_ip, port) if is_loopback_ip(packed_ip) else packed_ip


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
    step, family = (IPV6_ENTRY, socket.AF_INET6) if ipv6 else (IPV4_ENTRY, socket.AF_INET)
    end = len(data) - len(data) % step
    if limit is not None:
        end = min(end, limit * step)
    found = []
    for start in range(0, end, step):
        port = int.from_bytes(data[start + step - 2 : start + step], "big")
        if port:
            found.append((socket.inet_ntop(family, data[start : start + step - 2]), port))
    return found


def text(address: Address) -> str:
    """HOST:PORT, an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_has_ipv6() -> bool:
    """Whether this host can open IPv6 sockets (its loopback ::1 can be bound)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
