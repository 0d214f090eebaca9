"""Sans-IO peer wire connection: bytes in, messages out; messages in, bytes out."""

from __future__ import annotations

import struct

from . import messages as m

# The largest message a peer may send: a bitfield for 2M pieces or a 128 KiB block, with room
# for extension messages carrying a 16 KiB metadata piece.
MAX_MESSAGE_LENGTH = 256 * 1024 + 64
_HEADER = struct.Struct(">IB")  # length prefix and message id
_BLOCK_REF = struct.Struct(">II")  # piece index and offset
# Cap on bytes queued for sending before the adapter flushes, to bound memory per peer.
MAX_PENDING_OUTPUT = 64 * 1024 * 1024


class PeerWire:
    """Frames and parses one peer connection; holds no socket and reads no clock."""

    def __init__(self, info_hash: bytes | None, peer_id: bytes) -> None:
        # info_hash is None for an incoming connection until the peer's handshake names it.
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.remote: m.Handshake | None = None
        self._tail = bytearray()  # the start of a message the last read cut short
        self._outbox: list[bytes] = []
        self._outbox_size = 0
        self.handshake_sent = False

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[m.Event]:
        """Consume bytes from the peer and return the complete messages they finish.

        A Piece's data is a view into `data`, not a copy: it stays valid, since bytes never
        change, and the swarm copies it once, into the piece being assembled.
        """
        events: list[m.Event] = []
        if self.remote is None:
            data = self._read_handshake(data, events)
            if self.remote is None:
                return events
        view = memoryview(bytes(data) if isinstance(data, bytearray) else data)
        pos = 0
        if self._tail:
            pos = self._finish_split_message(view, events)
            if pos < 0:
                return events
        pos = self._parse(view, pos, events)
        if pos < len(view):
            self._tail = bytearray(view[pos:])
        return events

    def _read_handshake(self, data: bytes, events: list[m.Event]) -> bytes:
        tail = self._tail
        tail += data
        if len(tail) < m.HANDSHAKE_LENGTH:
            # Fail early on a wrong protocol string instead of waiting for 68 bytes.
            expected = bytes((len(m.PROTOCOL),)) + m.PROTOCOL
            if tail[: min(len(tail), len(expected))] != expected[: min(len(tail), len(expected))]:
                raise m.ProtocolError("the peer did not send a BitTorrent handshake")
            return b""
        self.remote = self._parse_handshake(bytes(tail[: m.HANDSHAKE_LENGTH]))
        events.append(self.remote)
        rest = bytes(tail[m.HANDSHAKE_LENGTH :])
        self._tail = bytearray()
        return rest

    def _finish_split_message(self, view: memoryview, events: list[m.Event]) -> int:
        """Complete the message that the previous read cut; returns bytes used, -1 if not yet."""
        tail = self._tail
        pos = 0
        if len(tail) < 4:
            pos = min(4 - len(tail), len(view))
            tail += view[:pos]
            if len(tail) < 4:
                return -1
        length = int.from_bytes(tail[:4], "big")
        if length > MAX_MESSAGE_LENGTH:
            raise m.ProtocolError(f"message of {length} bytes exceeds the limit")
        missing = 4 + length - len(tail)
        take = min(missing, len(view) - pos)
        tail += view[pos : pos + take]
        if take < missing:
            return -1
        self._tail = bytearray()
        self._parse(memoryview(bytes(tail)), 0, events)
        return pos + take

    def _parse(self, view: memoryview, pos: int, events: list[m.Event]) -> int:
        """Parse whole messages from view[pos:]; returns where the first incomplete one starts."""
        end = len(view)
        while end - pos >= 5:
            length, message_id = _HEADER.unpack_from(view, pos)
            if length > MAX_MESSAGE_LENGTH:
                raise m.ProtocolError(f"message of {length} bytes exceeds the limit")
            if length == 0:
                events.append(m.KEEP_ALIVE)
                pos += 4
                continue
            if end - pos - 4 < length:
                return pos
            if message_id == m.PIECE and length > 9:
                # The hot path: no copy, the block stays a view of the bytes received.
                if length - 9 > m.MAX_REQUEST_LENGTH:
                    raise m.ProtocolError(f"block of {length - 9} bytes is too large")
                index, begin = _BLOCK_REF.unpack_from(view, pos + 5)
                events.append(m.Piece(index, begin, view[pos + 13 : pos + 4 + length]))
                pos += 4 + length
                continue
            payload = bytes(view[pos + 5 : pos + 4 + length])
            pos += 4 + length
            if message_id in m.FAST_ONLY and not self._fast:
                raise m.ProtocolError(f"fast-extension message {message_id} without support")
            events.append(m.parse_message(message_id, payload))
        if end - pos == 4 and bytes(view[pos : pos + 4]) == b"\x00\x00\x00\x00":
            events.append(m.KEEP_ALIVE)
            pos += 4
        return pos

    @property
    def _fast(self) -> bool:
        return self.remote is not None and self.remote.supports(m.FAST_BIT)

    @property
    def supports_fast(self) -> bool:
        """Whether both sides speak the fast extension."""
        return self._fast

    @property
    def supports_extensions(self) -> bool:
        """Whether the peer speaks the extension protocol (BEP 10)."""
        return self.remote is not None and self.remote.supports(m.EXTENSION_BIT)

    def _parse_handshake(self, raw: bytes) -> m.Handshake:
        if raw[0] != len(m.PROTOCOL) or raw[1:20] != m.PROTOCOL:
            raise m.ProtocolError("the peer did not send a BitTorrent handshake")
        info_hash = raw[28:48]
        if self.info_hash is not None and info_hash != self.info_hash:
            raise m.ProtocolError("the peer's handshake names another torrent")
        return m.Handshake(info_hash=info_hash, peer_id=raw[48:68], reserved=raw[20:28])

    # -- sending -----------------------------------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        """Bytes queued for the peer and not yet taken."""
        return self._outbox_size

    def data_to_send(self) -> list[bytes]:
        """Take the bytes queued for the peer."""
        out = self._outbox
        self._outbox = []
        self._outbox_size = 0
        return out

    def _queue(self, data: bytes) -> None:
        self._outbox_size += len(data)
        if self._outbox_size > MAX_PENDING_OUTPUT:
            raise m.ProtocolError("too much output queued for a peer that does not read")
        self._outbox.append(data)

    def send_handshake(self, info_hash: bytes) -> None:
        """Queue our handshake for the given torrent."""
        self.info_hash = info_hash
        self.handshake_sent = True
        self._queue(m.handshake_bytes(info_hash, self.peer_id))

    def send_keep_alive(self) -> None:
        """Queue a keep-alive."""
        self._queue(b"\x00\x00\x00\x00")

    def send_simple(self, message_id: int) -> None:
        """Queue a message with no payload (choke, unchoke, interest, have_all, have_none)."""
        self._queue(m.frame(message_id))

    def send_have(self, index: int) -> None:
        """Queue a have."""
        self._queue(m.frame_index(m.HAVE, index))

    def send_allowed_fast(self, index: int) -> None:
        """Queue an allowed-fast."""
        self._queue(m.frame_index(m.ALLOWED_FAST, index))

    def send_bitfield(self, bits: bytes) -> None:
        """Queue a bitfield."""
        self._queue(m.frame(m.BITFIELD, bits))

    def send_request(self, index: int, begin: int, length: int) -> None:
        """Queue a block request."""
        self._queue(m.frame_block_ref(m.REQUEST, index, begin, length))

    def send_cancel(self, index: int, begin: int, length: int) -> None:
        """Queue a cancel."""
        self._queue(m.frame_block_ref(m.CANCEL, index, begin, length))

    def send_reject(self, index: int, begin: int, length: int) -> bool:
        """Queue a reject (fast extension only); returns whether one was queued."""
        if not self._fast:
            return False
        self._queue(m.frame_block_ref(m.REJECT_REQUEST, index, begin, length))
        return True

    def send_piece(self, index: int, begin: int, data: bytes | memoryview) -> None:
        """Queue a block of data; the data is not copied."""
        self._queue(m.piece_header(index, begin, len(data)))
        self._queue(data)  # type: ignore[arg-type]

    def send_extended(self, extension_id: int, payload: bytes) -> None:
        """Queue an extension-protocol message."""
        self._queue(m.frame(m.EXTENDED, bytes((extension_id,)) + payload))
