"""Telling incoming TCP streams apart by their first bytes, at every split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.streams import GREETINGS, StreamKind, classify
from shoal.wire import messages as m
from shoal.wire.mse import MseInitiator

INFO_HASH = bytes(range(20))
BT_HANDSHAKE = m.handshake_bytes(INFO_HASH, b"-SH0000-000000000000")


def test_a_bittorrent_handshake_and_an_mse_one_are_told_apart():
    assert classify(BT_HANDSHAKE) is StreamKind.BITTORRENT
    assert classify(BT_HANDSHAKE[:20]) is StreamKind.BITTORRENT
    assert classify(memoryview(BT_HANDSHAKE)[:19]) is None
    assert classify(b"") is None
    assert classify(b"\x13Bit") is None
    assert classify(b"\x13Bx") is StreamKind.MSE
    assert classify(MseInitiator(INFO_HASH).data_to_send()) in (StreamKind.MSE, None)


@given(st.binary(max_size=40))
def test_the_verdict_is_a_prefix_test(data):
    verdict = classify(data)
    [greeting] = GREETINGS
    if data[:20] == greeting:
        assert verdict is StreamKind.BITTORRENT
    elif greeting.startswith(data):
        assert verdict is None
    else:
        assert verdict is StreamKind.MSE


@given(st.binary(min_size=1, max_size=60), st.data())
def test_once_decided_more_bytes_never_change_the_verdict(data, draw):
    cut = draw.draw(st.integers(0, len(data)))
    early = classify(data[:cut])
    if early is not None:
        assert classify(data) is early
