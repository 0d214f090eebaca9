"""Telling incoming TCP streams apart by their first bytes, at every split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.overlay.messages import GREETING as OVERLAY_GREETING
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
    opened = [kind for greeting, kind in GREETINGS.items() if data.startswith(greeting)]
    if opened:
        assert [verdict] == opened
    elif any(greeting.startswith(data) for greeting in GREETINGS):
        assert verdict is None
    else:
        assert verdict is StreamKind.MSE


def test_the_overlay_greeting_is_told_apart_at_every_split():
    for cut in range(len(OVERLAY_GREETING)):
        assert classify(OVERLAY_GREETING[:cut]) is None
    assert classify(OVERLAY_GREETING + b"\x00" * 23) is StreamKind.OVERLAY


@given(st.binary(min_size=1, max_size=60), st.data())
def test_once_decided_more_bytes_never_change_the_verdict(data, draw):
    cut = draw.draw(st.integers(0, len(data)))
    early = classify(data[:cut])
    if early is not None:
        assert classify(data) is early
