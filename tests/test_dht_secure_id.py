"""BEP 42 node ids: the BEP's test vectors, ids bound to their IP, local networks exempt."""

from __future__ import annotations

import ipaddress
import random
from itertools import count

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shoal.dht.secure_id import crc32c, is_exempt, is_secure, secure_node_id


def packed(ip: str) -> bytes:
    """ip as the 4 or 16 bytes the functions take."""
    return ipaddress.ip_address(ip).packed


# IP, rand, and the example node id of BEP 42's table.
VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]

ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(lambda ip: ip.packed)
seeds = st.integers(0, 2**64)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize(("ip", "rand", "example"), VECTORS)
def test_bep42_vectors_generate(ip, rand, example):
    expected = bytes.fromhex(example)
    # The id's last byte is rng's draw: try seeds until it is the table's rand.
    node_id = next(
        node_id
        for seed in count()
        if (node_id := secure_node_id(packed(ip), random.Random(seed)))[-1] == rand
    )
    # Only the top 5 bits of the third byte come from the hash; its low 3 are random.
    assert node_id[:2] == expected[:2]
    assert node_id[2] & 0xF8 == expected[2] & 0xF8
    assert node_id[-1] == expected[-1]


@pytest.mark.parametrize(("ip", "rand", "example"), VECTORS)
def test_bep42_vectors_verify(ip, rand, example):
    node_id = bytes.fromhex(example)
    assert is_secure(node_id, packed(ip))
    assert not is_secure(node_id[:2] + bytes([node_id[2] ^ 0x08]) + node_id[3:], packed(ip))
    assert not is_secure(node_id[:-1] + bytes([rand ^ 1]), packed(ip))


def test_an_id_is_not_secure_for_another_ip():
    node_id = bytes.fromhex(VECTORS[0][2])
    assert not is_secure(node_id, packed("21.75.31.124"))


@given(ips, seeds)
def test_a_generated_id_is_secure_for_its_ip(ip, seed):
    node_id = secure_node_id(ip, random.Random(seed))
    assert len(node_id) == 20
    assert is_secure(node_id, ip)


@given(ips, seeds, st.data())
def test_changing_a_hashed_bit_of_the_ip_makes_the_id_insecure(ip, seed, data):
    # Every bit the BEP 42 mask keeps feeds the hash, and CRC-32C tells one-bit changes apart
    # in its top 21 bits, so no such neighbour may reuse the id.
    mask = 0x030F3FFF if len(ip) == 4 else 0x0103070F1F3F7FFF << 64
    bit = data.draw(st.sampled_from([b for b in range(8 * len(ip)) if mask >> b & 1]))
    other = (int.from_bytes(ip, "big") ^ 1 << bit).to_bytes(len(ip), "big")
    assume(not is_exempt(other))
    assert not is_secure(secure_node_id(ip, random.Random(seed)), other)


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.7.7",
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "fe80::1",
        "febf:ffff::1",
        "fc00::1",
        "fdff:1234::5",
    ],
)
def test_local_networks_are_exempt(ip):
    assert is_exempt(packed(ip))
    assert is_secure(bytes(20), packed(ip))


@pytest.mark.parametrize(
    "ip",
    [
        "9.255.255.255",
        "11.0.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.169.0.1",
        "8.8.8.8",
        "2001:db8::1",
        "fec0::1",
        "fe00::1",
        "::",
    ],
)
def test_public_addresses_are_not_exempt(ip):
    assert not is_exempt(packed(ip))


@pytest.mark.parametrize("length", [0, 3, 5, 8, 15, 17])
def test_an_ip_of_the_wrong_length_is_refused(length):
    ip = bytes(range(1, length + 1))
    with pytest.raises(ValueError, match=f"not {length}"):
        secure_node_id(ip, random.Random(0))
    with pytest.raises(ValueError, match=f"not {length}"):
        is_secure(bytes(20), ip)
    with pytest.raises(ValueError, match=f"not {length}"):
        is_exempt(ip)


@pytest.mark.parametrize("length", [0, 19, 21])
def test_a_node_id_of_the_wrong_length_is_refused(length):
    with pytest.raises(ValueError, match=f"not {length}"):
        is_secure(bytes(length), packed("8.8.8.8"))
