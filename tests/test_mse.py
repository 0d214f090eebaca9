"""MSE/PE: the sans-IO handshake against itself, against junk, and against libtorrent."""

from __future__ import annotations

import hashlib
import itertools
import random
import socket
from dataclasses import dataclass, field

import libtorrent as lt
import ltclient
import mse_peer
import pytest
from conftest import LOOPBACK, wait_for
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shoal.wire import messages as m
from shoal.wire.connection import PeerWire
from shoal.wire.messages import ProtocolError
from shoal.wire.mse import (
    KEY_LENGTH,
    MAX_PAD,
    PLAINTEXT,
    PRIME,
    RC4,
    REQ1_WINDOW,
    VC_WINDOW,
    MseInitiator,
    MseReceiver,
    skey_hash,
)

INFO_HASH = hashlib.sha1(b"a torrent").digest()
OTHER_HASH = hashlib.sha1(b"another torrent").digest()
KNOWN = {skey_hash(INFO_HASH): INFO_HASH}
BT_HANDSHAKE = m.handshake_bytes(INFO_HASH, b"-SH0001-abcdefghijkl")

methods_st = st.sampled_from([RC4, PLAINTEXT, RC4 | PLAINTEXT])
seeds = st.integers(0, 2**32)


# -- in memory -------------------------------------------------------------------------------


@dataclass
class Side:
    """One end of an in-memory connection: its core, its stream, what it has received."""

    core: MseInitiator | MseReceiver
    stream: bytes = b""  # sent on the BitTorrent stream as soon as its handshake is done
    received: bytearray = field(default_factory=bytearray)
    outgoing: bytearray = field(default_factory=bytearray)
    stream_sent: bool = False

    def collect(self) -> None:
        """Move what the core queued, then the encrypted stream once done, onto the wire."""
        self.outgoing += self.core.data_to_send()
        result = self.core.result
        if result is not None and not self.stream_sent:
            self.stream_sent = True
            self.outgoing += result.cipher.encrypt(self.stream) if result.cipher else self.stream

    def deliver(self, chunk: bytes) -> None:
        """Hand bytes from the peer to the core, or past it to the stream once done."""
        result = self.core.result
        if result is None:
            self.core.receive(chunk)
            if self.core.result is not None:
                self.received += self.core.result.payload
        else:
            self.received += result.cipher.decrypt(chunk) if result.cipher else chunk


def pump(a: Side, b: Side, sizes: list[int]) -> None:
    """Carry bytes both ways in bursts of the given sizes (cycled) until nothing moves."""
    burst = itertools.cycle(sizes)
    moved = True
    while moved:
        moved = False
        for source, sink in ((a, b), (b, a)):
            source.collect()
            if source.outgoing:
                size = next(burst)
                chunk = bytes(source.outgoing[:size])
                del source.outgoing[:size]
                sink.deliver(chunk)
                moved = True


def expected_method(provided: int, accepted: int, prefer: int) -> int:
    """What the receiver should select."""
    common = provided & accepted
    if common & prefer:
        return prefer
    return RC4 if common & RC4 else PLAINTEXT


def check_handshake(
    *,
    provided: int = RC4 | PLAINTEXT,
    accepted: int = RC4 | PLAINTEXT,
    prefer: int = RC4,
    initial_payload: bytes = b"",
    sizes: tuple[int, ...] = (1 << 20,),
    seed: int = 0,
    pad_cd_max: int = 0,
) -> tuple[Side, Side]:
    """Run a whole handshake plus some stream each way and check both sides agree."""
    initiator = MseInitiator(
        INFO_HASH,
        methods=provided,
        initial_payload=initial_payload,
        random=random.Random(seed).randbytes,
        pad_cd_max=pad_cd_max,
    )
    receiver = MseReceiver(
        KNOWN.get,
        methods=accepted,
        prefer=prefer,
        random=random.Random(seed + 1).randbytes,
        pad_cd_max=pad_cd_max,
    )
    a = Side(initiator, stream=b"from A " * 50)
    b = Side(receiver, stream=b"from B " * 70)
    pump(a, b, list(sizes))
    assert initiator.result is not None and receiver.result is not None
    method = expected_method(provided, accepted, prefer)
    for result in (initiator.result, receiver.result):
        assert result.info_hash == INFO_HASH
        assert result.method == method
        assert (result.cipher is not None) == (method == RC4)
    assert bytes(b.received) == initial_payload + a.stream
    assert bytes(a.received) == b.stream
    assert initiator.buffered == receiver.buffered == 0
    return a, b


@settings(max_examples=150, deadline=None)
@given(
    provided=methods_st,
    accepted=methods_st,
    prefer=st.sampled_from([RC4, PLAINTEXT]),
    initial_payload=st.one_of(st.just(b""), st.just(BT_HANDSHAKE), st.binary(max_size=300)),
    sizes=st.lists(st.integers(1, 1500), min_size=1, max_size=8),
    seed=seeds,
    pad_cd_max=st.sampled_from([0, 1, MAX_PAD]),
)
def test_handshake_in_random_splits(
    provided, accepted, prefer, initial_payload, sizes, seed, pad_cd_max
):
    assume(provided & accepted)
    check_handshake(
        provided=provided,
        accepted=accepted,
        prefer=prefer,
        initial_payload=initial_payload,
        sizes=tuple(sizes),
        seed=seed,
        pad_cd_max=pad_cd_max,
    )


@pytest.mark.parametrize("method", [RC4, PLAINTEXT])
@pytest.mark.parametrize("initial_payload", [b"", BT_HANDSHAKE])
@pytest.mark.parametrize("sizes", [(1 << 20,), (1,)], ids=["whole", "byte-by-byte"])
def test_handshake_whole_and_byte_by_byte(method, initial_payload, sizes):
    check_handshake(provided=method, initial_payload=initial_payload, sizes=sizes, pad_cd_max=9)


def test_pads_vary_with_the_random_source():
    lengths = {
        len(MseInitiator(INFO_HASH, random=random.Random(seed).randbytes).data_to_send())
        for seed in range(40)
    }
    assert min(lengths) >= KEY_LENGTH and max(lengths) <= KEY_LENGTH + MAX_PAD
    assert len(lengths) > 30


def rc4_keystream(key: bytes, length: int) -> bytes:
    """Textbook RC4, independent of the module under test."""
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for _ in range(length):
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(state[(state[i] + state[j]) % 256])
    return bytes(out)


def xor(a: bytes, b: bytes) -> bytes:
    """Two equally long byte strings xored."""
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def test_step_three_matches_the_spec_computed_independently():
    # The initiator's private key is the first 20 random bytes it draws.
    initiator = MseInitiator(INFO_HASH, methods=RC4, random=random.Random(5).randbytes)
    private = int.from_bytes(random.Random(5).randbytes(20), "big")
    initiator.data_to_send()
    theirs = pow(2, 12345, PRIME)
    initiator.receive(theirs.to_bytes(KEY_LENGTH, "big"))
    step3 = initiator.data_to_send()
    secret = pow(theirs, private, PRIME).to_bytes(KEY_LENGTH, "big")
    sha1 = lambda data: hashlib.sha1(data).digest()  # noqa: E731
    assert step3[:20] == sha1(b"req1" + secret)
    assert step3[20:40] == xor(sha1(b"req2" + INFO_HASH), sha1(b"req3" + secret))
    keystream = rc4_keystream(sha1(b"keyA" + secret + INFO_HASH), 1024 + 16)[1024:]
    plain = xor(step3[40:], keystream)
    # VC, crypto_provide = RC4, len(PadC) = 0, len(IA) = 0
    assert plain == bytes(8) + b"\x00\x00\x00\x02" + b"\x00\x00" + b"\x00\x00"


def test_receiver_passes_on_stream_bytes_that_arrive_with_the_ia():
    def start() -> tuple[MseInitiator, MseReceiver, bytes]:
        a = MseInitiator(
            INFO_HASH, methods=RC4, initial_payload=b"IA", random=random.Random(1).randbytes
        )
        b = MseReceiver(KNOWN.get, random=random.Random(2).randbytes)
        b.receive(a.data_to_send())
        a.receive(b.data_to_send())
        return a, b, a.data_to_send()

    # A first run gives the keystream that follows the IA; the same seeds replay the handshake.
    a, b, step3 = start()
    b.receive(step3)
    a.receive(b.data_to_send())
    follow = a.result.cipher.encrypt(b"next")
    _, again, same = start()
    assert same == step3
    again.receive(step3 + follow)
    assert again.result.payload == b"IAnext"


def test_plaintext_stream_bytes_after_the_ia_pass_through():
    a = MseInitiator(INFO_HASH, methods=PLAINTEXT, initial_payload=b"IA")
    b = MseReceiver(KNOWN.get)
    b.receive(a.data_to_send())
    a.receive(b.data_to_send())
    b.receive(a.data_to_send() + b"raw")
    assert b.result.method == PLAINTEXT and b.result.cipher is None
    assert b.result.payload == b"IAraw"
    a.receive(b.data_to_send() + b"back")
    assert a.result.payload == b"back"


def test_encrypt_many_continues_the_stream_like_encrypt():
    a, b = check_handshake()
    sender, reader = a.core.result.cipher, b.core.result.cipher
    parts = [b"abc", memoryview(b"defgh")[1:], b"", bytearray(b"ij")]
    joined = sender.encrypt_many(parts)
    assert isinstance(joined, bytearray)
    assert reader.decrypt(joined) == b"abcefghij"
    assert reader.decrypt(sender.encrypt(b"more")) == b"more"


# -- hostile and broken peers ----------------------------------------------------------------


def started(
    initiator: MseInitiator, receiver: MseReceiver
) -> tuple[MseInitiator, MseReceiver, bytes]:
    """Exchange the public keys; return the initiator's step 3, not yet delivered."""
    receiver.receive(initiator.data_to_send())
    initiator.receive(receiver.data_to_send())
    return initiator, receiver, initiator.data_to_send()


def test_unknown_info_hash_is_refused():
    _, receiver, step3 = started(MseInitiator(OTHER_HASH), MseReceiver(KNOWN.get))
    with pytest.raises(ProtocolError, match="do not have"):
        receiver.receive(step3)
    assert receiver.result is None and receiver.buffered == 0
    with pytest.raises(ProtocolError):
        receiver.receive(b"more")


def test_no_common_method_is_refused():
    _, receiver, step3 = started(
        MseInitiator(INFO_HASH, methods=PLAINTEXT), MseReceiver(KNOWN.get, methods=RC4)
    )
    with pytest.raises(ProtocolError, match="none we accept"):
        receiver.receive(step3)


def test_a_selection_we_did_not_offer_is_refused(monkeypatch):
    initiator, receiver, step3 = started(
        MseInitiator(INFO_HASH, methods=RC4), MseReceiver(KNOWN.get)
    )
    monkeypatch.setattr(receiver, "_select", lambda provided: PLAINTEXT)
    receiver.receive(step3)
    with pytest.raises(ProtocolError, match="not one offered"):
        initiator.receive(receiver.data_to_send())


def test_a_wrong_verification_constant_is_refused():
    _, receiver, step3 = started(MseInitiator(INFO_HASH), MseReceiver(KNOWN.get))
    tampered = bytearray(step3)
    tampered[40] ^= 0x01
    with pytest.raises(ProtocolError, match="verification constant"):
        receiver.receive(bytes(tampered))


@pytest.mark.parametrize("side", ["initiator", "receiver"])
def test_padding_over_512_bytes_is_refused(monkeypatch, side):
    initiator, receiver = MseInitiator(INFO_HASH), MseReceiver(KNOWN.get)
    liar = initiator if side == "initiator" else receiver
    monkeypatch.setattr(liar, "_zero_pad", lambda: bytes(MAX_PAD + 1))
    _, _, step3 = started(initiator, receiver)
    with pytest.raises(ProtocolError, match="longer than 512"):
        receiver.receive(step3)
        initiator.receive(receiver.data_to_send())


@pytest.mark.parametrize("key", [0, 1, PRIME - 1, PRIME, 2**768 - 1])
def test_degenerate_public_keys_are_refused(key):
    for core in (MseInitiator(INFO_HASH), MseReceiver(KNOWN.get)):
        with pytest.raises(ProtocolError, match="degenerate"):
            core.receive(key.to_bytes(KEY_LENGTH, "big"))


def feed_junk(core: MseInitiator | MseReceiver, window: int, chunk: int) -> int:
    """Feed random junk until the core gives up; check it never holds more than window."""
    junk = random.Random(7).randbytes
    fed = 0
    with pytest.raises(ProtocolError, match=f"within {window} bytes"):
        while True:
            core.receive(junk(chunk))
            fed += chunk
            assert core.buffered < max(KEY_LENGTH, window)
    assert core.buffered == 0
    return fed + chunk


@pytest.mark.parametrize("chunk", [1, 7, 100, 5000])
def test_receiver_gives_up_on_junk_within_the_spec_window(chunk):
    fed = feed_junk(MseReceiver(KNOWN.get), REQ1_WINDOW, chunk)
    assert fed <= KEY_LENGTH + REQ1_WINDOW + chunk


@pytest.mark.parametrize("chunk", [1, 7, 100, 5000])
def test_initiator_gives_up_on_junk_within_the_spec_window(chunk):
    fed = feed_junk(MseInitiator(INFO_HASH), VC_WINDOW, chunk)
    assert fed <= KEY_LENGTH + VC_WINDOW + chunk


def test_receiver_finds_req1_after_the_longest_padding():
    # Two random bytes pick a pad length modulo 513; 0x0200 gives the longest.
    initiator = MseInitiator(INFO_HASH, random=lambda n: b"\x02\x00" if n == 2 else b"\xff" * n)
    receiver = MseReceiver(KNOWN.get)
    hello = initiator.data_to_send()
    assert len(hello) == KEY_LENGTH + MAX_PAD
    receiver.receive(hello)
    initiator.receive(receiver.data_to_send())
    receiver.receive(initiator.data_to_send())
    assert receiver.result is not None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), cut=st.integers(1, 700), initiator=st.booleans())
def test_random_bytes_raise_only_protocol_errors(data, cut, initiator):
    core = MseInitiator(INFO_HASH) if initiator else MseReceiver(KNOWN.get)
    try:
        for start in range(0, len(data), cut):
            core.receive(data[start : start + cut])
    except ProtocolError:
        pass
    assert core.buffered <= cut + max(REQ1_WINDOW, VC_WINDOW) + KEY_LENGTH


@settings(max_examples=150, deadline=None)
@given(
    seed=seeds,
    position=st.integers(0, 4000),
    flip=st.integers(1, 255),
    toward_receiver=st.booleans(),
)
def test_a_corrupted_handshake_raises_only_protocol_errors(seed, position, flip, toward_receiver):
    initiator = MseInitiator(
        INFO_HASH, initial_payload=b"IA", random=random.Random(seed).randbytes, pad_cd_max=MAX_PAD
    )
    receiver = MseReceiver(KNOWN.get, random=random.Random(seed + 1).randbytes, pad_cd_max=MAX_PAD)
    source = initiator if toward_receiver else receiver
    try:
        for _ in range(3):
            for sender, target in ((initiator, receiver), (receiver, initiator)):
                out = bytearray(sender.data_to_send())
                if sender is source and 0 <= position < len(out):
                    out[position] ^= flip
                    position = -1
                elif sender is source:
                    position -= len(out)
                if out and target.result is None:
                    target.receive(bytes(out))
    except ProtocolError:
        return
    # A flip inside random padding or the IA may go unnoticed; the keys must still agree.
    if initiator.result and receiver.result:
        assert receiver.result.cipher.decrypt(initiator.result.cipher.encrypt(b"x")) == b"x"


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        MseInitiator(b"short")
    with pytest.raises(ValueError):
        MseInitiator(INFO_HASH, initial_payload=bytes(0x10000))
    with pytest.raises(ValueError):
        MseInitiator(INFO_HASH, methods=0x04)
    with pytest.raises(ValueError):
        MseReceiver(KNOWN.get, prefer=RC4 | PLAINTEXT)
    with pytest.raises(ValueError):
        MseReceiver(KNOWN.get, pad_cd_max=MAX_PAD + 1)


def test_receive_after_the_end_is_a_programming_error():
    a, _ = check_handshake()
    with pytest.raises(RuntimeError):
        a.core.receive(b"x")


# -- against libtorrent ----------------------------------------------------------------------

LEVELS = {"rc4": (lt.enc_level.rc4, RC4), "plaintext": (lt.enc_level.plaintext, PLAINTEXT)}
FLAGS = {RC4: lt.peer_info.rc4_encrypted, PLAINTEXT: lt.peer_info.plaintext_encrypted}


@pytest.fixture
def small_torrent(random_file) -> tuple[bytes, bytes]:
    """A 300 kB file's torrent and its info-hash."""
    content = random_file(300_000, "seed/content.bin", seed=11)
    torrent = ltclient.make_torrent(content, piece_size=32 * 1024)
    return torrent, mse_peer.v1_info_hash(torrent)


@pytest.mark.parametrize("level", sorted(LEVELS))
@pytest.mark.parametrize("with_ia", [True, False], ids=["handshake-in-IA", "handshake-after"])
def test_we_dial_a_libtorrent_seeder(small_torrent, tmp_path, level, with_ia):
    torrent, info_hash = small_torrent
    lt_level, method = LEVELS[level]
    session = mse_peer.encrypted_session(lt_level)
    handle = ltclient.seed(session, torrent, tmp_path / "seed")
    wire = PeerWire(info_hash, mse_peer.peer_id())
    wire.send_handshake(info_hash)
    handshake = b"".join(wire.data_to_send())
    core = MseInitiator(info_hash, initial_payload=handshake if with_ia else b"")
    port = ltclient.listen_port(session)
    with socket.create_connection((LOOPBACK, port), timeout=mse_peer.TIMEOUT) as sock:
        result = mse_peer.complete_handshake(sock, core)
        assert result.method == method and result.info_hash == info_hash
        stream = mse_peer.BtOverMse(sock, result, wire)
        if not with_ia:
            wire.send_handshake(info_hash)
            stream.flush()
        events = stream.read_until(lambda e: isinstance(e, m.HaveAll | m.Bitfield))
        assert isinstance(events[0], m.Handshake) and events[0].info_hash == info_hash
        wait_for(
            lambda: mse_peer.encrypted_peers(handle, FLAGS[method]) == 1,
            timeout=10,
            message=f"libtorrent does not list us as {level}: {ltclient.describe(handle)}",
        )


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_libtorrent_dials_our_receiver(small_torrent, tmp_path, level):
    torrent, info_hash = small_torrent
    lt_level, method = LEVELS[level]
    session = mse_peer.encrypted_session(lt_level)
    handle = ltclient.leech(session, torrent, tmp_path / "leech")
    with socket.create_server((LOOPBACK, 0)) as listener:
        ltclient.connect(handle, listener.getsockname()[1])
        conn, result = mse_peer.accept_mse(listener, info_hash)
    with conn:
        assert result.method == method and result.info_hash == info_hash
        # libtorrent sends its BitTorrent handshake inside the MSE handshake, as IA.
        assert result.payload.startswith(b"\x13BitTorrent protocol")
        wire = PeerWire(None, mse_peer.peer_id())
        stream = mse_peer.BtOverMse(conn, result, wire)
        events = stream.read_until(lambda e: isinstance(e, m.Handshake))
        assert events[0].info_hash == info_hash
        wire.send_handshake(info_hash)
        wire.send_simple(m.HAVE_ALL)
        stream.flush()
        # A leecher told we have everything wants it: proof it read our encrypted stream.
        stream.read_until(lambda e: isinstance(e, m.Interested))
        wait_for(
            lambda: mse_peer.encrypted_peers(handle, FLAGS[method]) == 1,
            timeout=10,
            message=f"libtorrent does not list us as {level}: {ltclient.describe(handle)}",
        )


def private_key_for_short_secret(public_key: bytes) -> bytes:
    """A private key whose shared secret with public_key starts with a zero byte."""
    theirs = int.from_bytes(public_key, "big")
    for candidate in range(1, 1 << 16):
        private = hashlib.sha1(candidate.to_bytes(4, "big")).digest()
        if pow(theirs, int.from_bytes(private, "big"), PRIME) < 1 << (8 * (KEY_LENGTH - 1)):
            return private
    raise AssertionError("no short secret in 65536 tries")


def test_libtorrent_pads_a_short_shared_secret_as_we_do(small_torrent, tmp_path):
    # S is hashed as 96 bytes; one handshake in 256 has a leading zero byte, which both sides
    # must keep. Choosing our key after seeing libtorrent's makes that case certain.
    torrent, info_hash = small_torrent
    session = mse_peer.encrypted_session(lt.enc_level.rc4)
    handle = ltclient.leech(session, torrent, tmp_path / "leech")
    with socket.create_server((LOOPBACK, 0)) as listener:
        ltclient.connect(handle, listener.getsockname()[1])
        conn, result = mse_peer.accept_mse(listener, info_hash, private_key_for_short_secret)
    with conn:
        stream = mse_peer.BtOverMse(conn, result, PeerWire(None, mse_peer.peer_id()))
        assert stream.events and isinstance(stream.events[0], m.Handshake)
