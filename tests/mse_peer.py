"""A raw-socket peer that speaks MSE through shoal's sans-IO core, for interop with libtorrent."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import cast

import libtorrent as lt
import ltclient

from shoal.streams import StreamKind, classify
from shoal.wire import messages as m
from shoal.wire.connection import PeerWire
from shoal.wire.mse import (
    KEY_LENGTH,
    MseInitiator,
    MseReceiver,
    MseResult,
    RandomBytes,
    skey_hash,
)

TIMEOUT = 15.0


def encrypted_session(level: lt.enc_level) -> lt.session:
    """A loopback libtorrent session that speaks only MSE, both ways, settling on level."""
    settings = ltclient.session_settings(rc4=True)  # MSE forced both ways
    settings["allowed_enc_level"] = int(level)
    # libtorrent takes a plain dict here; its type stubs know only the settings_pack form.
    session = lt.session(cast("lt.settings_pack", settings))
    if ltclient.listen_port(session) == 0:
        raise AssertionError("libtorrent failed to listen on 127.0.0.1")
    return session


def v1_info_hash(torrent: bytes) -> bytes:
    """The SHA-1 info-hash of a bencoded torrent."""
    return lt.torrent_info(torrent).info_hashes().v1.to_bytes()


def peer_id() -> bytes:
    """A fresh peer id in the Azureus style."""
    return b"-SH0001-" + os.urandom(12)


def complete_handshake(sock: socket.socket, core: MseInitiator | MseReceiver) -> MseResult:
    """Run the MSE core over a blocking socket until it has a result."""
    sock.settimeout(TIMEOUT)
    while True:
        out = core.data_to_send()
        if out:
            sock.sendall(out)
        if core.result is not None:
            return core.result
        data = sock.recv(65536)
        if not data:
            raise AssertionError("the peer closed the connection during the MSE handshake")
        core.receive(data)


def accept_mse(
    listener: socket.socket,
    info_hash: bytes,
    choose_private_key: Callable[[bytes], bytes] | None = None,
) -> tuple[socket.socket, MseResult]:
    """Accept one connection, check it is not plain BitTorrent, answer its MSE handshake."""
    # choose_private_key, given the peer's public key, picks our 20-byte private key.
    listener.settimeout(TIMEOUT)
    conn, _ = listener.accept()
    conn.settimeout(TIMEOUT)
    first = b""
    while len(first) < KEY_LENGTH:
        data = conn.recv(65536)
        if not data:
            raise AssertionError(f"the peer closed after {len(first)} bytes")
        first += data
    if classify(first) is StreamKind.BITTORRENT:
        raise AssertionError("the peer sent a plain BitTorrent handshake, not MSE")
    random: RandomBytes = os.urandom
    if choose_private_key is not None:
        # The private key is the core's first draw from its random source.
        draws = [choose_private_key(first[:KEY_LENGTH])]
        random = lambda length: draws.pop() if draws else os.urandom(length)  # noqa: E731
    core = MseReceiver({skey_hash(info_hash): info_hash}.get, random=random)
    core.receive(first)
    return conn, complete_handshake(conn, core)


class BtOverMse:
    """The BitTorrent stream after a finished MSE handshake: encrypts out, decrypts in."""

    def __init__(self, sock: socket.socket, result: MseResult, wire: PeerWire) -> None:
        self.sock = sock
        self.result = result
        self.wire = wire
        self.events: list[m.Event] = list(wire.receive(result.payload))

    def flush(self) -> None:
        """Send what the wire has queued, encrypted when RC4 was agreed."""
        buffers = self.wire.data_to_send()
        cipher = self.result.cipher
        self.sock.sendall(cipher.encrypt_many(buffers) if cipher else b"".join(buffers))

    def read_until(self, done: Callable[[m.Event], bool]) -> list[m.Event]:
        """Read and parse until an event satisfies done; all events so far."""
        cipher = self.result.cipher
        while not any(done(event) for event in self.events):
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"the peer closed the stream; events so far: {self.events}")
            self.events += self.wire.receive(cipher.decrypt(data) if cipher else data)
        return self.events


def encrypted_peers(handle: lt.torrent_handle, flag: int) -> int:
    """How many of the torrent's peers libtorrent lists with the given encryption flag."""
    return sum(1 for peer in handle.get_peer_info() if peer.flags & flag)
