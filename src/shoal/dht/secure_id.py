"""BEP 42: node ids bound to the node's external IP, so no one can place ids next to a target."""

from __future__ import annotations

import ipaddress
import random

NODE_ID_LENGTH = 20

# Per IP length: the BEP 42 mask and how many leading bytes of the IP it covers (IPv6 hashes
# only its high 64 bits, so a whole /64 shares the ids of one host).
_MASKS = {4: (0x030F3FFF, 4), 16: (0x0103070F1F3F7FFF, 8)}

# BEP 42 exempts local networks; it lists only IPv4, so IPv6 gets loopback, link-local and
# unique-local, the same kinds of address.
_EXEMPT_V4 = tuple(
    ipaddress.IPv4Network(block)
    for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
)
_EXEMPT_V6 = tuple(ipaddress.IPv6Network(block) for block in ("::1/128", "fe80::/10", "fc00::/7"))


def _crc32c_table() -> tuple[int, ...]:
    """The byte-at-a-time table of CRC-32C, reflected polynomial 0x82F63B78."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of data, as iSCSI and BEP 42 compute it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


def _checked_ip(ip: bytes) -> bytes:
    """ip itself if it is a packed IPv4 or IPv6 address; ValueError otherwise."""
    if len(ip) not in _MASKS:
        raise ValueError(f"a packed IP is 4 or 16 bytes, not {len(ip)}: {ip.hex()}")
    return ip


def _hash(ip: bytes, r: int) -> int:
    """The CRC-32C whose top 21 bits begin every id for ip whose last byte has r in its low 3."""
    mask, covered = _MASKS[len(_checked_ip(ip))]
    masked = int.from_bytes(ip[:covered], "big") & mask | r << (8 * covered - 3)
    return crc32c(masked.to_bytes(covered, "big"))


def secure_node_id(ip: bytes, rng: random.Random) -> bytes:
    """A random 20-byte node id that BEP 42 accepts for ip (packed, 4 or 16 bytes)."""
    last = rng.randrange(256)
    head = (_hash(ip, last & 7) >> 8) & 0xFFFFF8 | rng.randrange(8)
    return head.to_bytes(3, "big") + rng.randbytes(NODE_ID_LENGTH - 4) + bytes((last,))


def is_exempt(ip: bytes) -> bool:
    """Whether ip (packed) is on a local network, where BEP 42 does not bind ids to IPs."""
    address = ipaddress.ip_address(_checked_ip(ip))
    if isinstance(address, ipaddress.IPv4Address):
        return any(address in block for block in _EXEMPT_V4)
    return any(address in block for block in _EXEMPT_V6)


def is_secure(node_id: bytes, ip: bytes) -> bool:
    """Whether BEP 42 accepts node_id for a node at ip (packed); always so on local networks."""
    if len(node_id) != NODE_ID_LENGTH:
        raise ValueError(
            f"a node id is {NODE_ID_LENGTH} bytes, not {len(node_id)}: {node_id.hex()}"
        )
    if is_exempt(ip):
        return True
    return int.from_bytes(node_id[:3], "big") >> 3 == _hash(ip, node_id[-1] & 7) >> 11
