"""Message Stream Encryption (MSE/PE), the obfuscated BitTorrent handshake, as a sans-IO core."""

# The exchange, A being the side that dialled and SKEY the torrent's info-hash:
#
#   A->B  Ya, PadA
#   B->A  Yb, PadB
#   A->B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
#         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
#   B->A  ENCRYPT(VC, crypto_select, len(PadD), PadD), then the BitTorrent stream
#   A->B  the BitTorrent stream
#
# Neither side knows how much padding the other sent, so each resynchronises on the first value
# it can predict: B on HASH('req1', S), A on ENCRYPT(VC). Both searches are bounded by the
# largest padding allowed, so a peer sending junk is dropped after at most a kilobyte.
#
# An adapter drives either side alike: send data_to_send() after creating the core and after
# every receive(); once result is set, hand result.payload to the PeerWire, then pass every read
# through result.cipher.decrypt and every write through result.cipher.encrypt_many (neither
# when cipher is None: the peers agreed on plaintext after an obfuscated handshake).

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
except ImportError:  # cryptography < 43 keeps RC4 among the current ciphers
    from cryptography.hazmat.primitives.ciphers.algorithms import ARC4

from .messages import ProtocolError

# crypto_provide / crypto_select bits.
PLAINTEXT = 0x01
RC4 = 0x02
_KNOWN_METHODS = PLAINTEXT | RC4

# The 768-bit MODP prime of RFC 2409 (Oakley group 1), with generator 2.
PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3621"
    "0000000000090563",
    16,
)
GENERATOR = 2
KEY_LENGTH = 96  # a public key or the shared secret, big-endian, zero-filled on the left
PRIVATE_KEY_LENGTH = 20  # 160 bits, as the spec asks: plenty for a 768-bit group
MAX_PAD = 512  # PadA..PadD
VC = bytes(8)  # the verification constant
_HASH_LENGTH = 20
_RC4_DISCARD = 1024
# How far past the peer's public key its marker may end: its padding, then the marker itself.
REQ1_WINDOW = MAX_PAD + _HASH_LENGTH  # 532: B looks for HASH('req1', S) after Ya
VC_WINDOW = MAX_PAD + len(VC)  # 520: A looks for ENCRYPT(VC) after Yb
MAX_INITIAL_PAYLOAD = 0xFFFF  # len(IA) is two bytes


Buffer = bytes | bytearray | memoryview
RandomBytes = Callable[[int], bytes]


def skey_hash(info_hash: bytes) -> bytes:
    """HASH('req2', info_hash): the key under which a receiver looks a torrent up."""
    return _sha1(b"req2", info_hash)


def _sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _rc4(key: bytes) -> CipherContext:
    context = Cipher(ARC4(key), mode=None).encryptor()
    # The first kilobyte of RC4 keystream is biased towards the key; MSE drops it on both sides.
    context.update(bytes(_RC4_DISCARD))
    return context


class Rc4Cipher:
    """Both directions of an RC4 connection once the handshake is over; each call continues."""

    __slots__ = ("_encryptor", "decrypt", "encrypt")

    def __init__(self, encryptor: CipherContext, decryptor: CipherContext) -> None:
        self._encryptor = encryptor
        # OpenSSL's own methods rather than wrappers: one Python call less on every read/write.
        self.encrypt: Callable[[Buffer], bytes] = encryptor.update
        self.decrypt: Callable[[Buffer], bytes] = decryptor.update

    def encrypt_many(self, buffers: Sequence[Buffer]) -> bytearray:
        """Encrypt buffers in order into one new buffer (the caller's to keep), without a join."""
        out = bytearray(sum(len(buffer) for buffer in buffers))
        view = memoryview(out)
        position = 0
        update_into = self._encryptor.update_into
        for buffer in buffers:
            end = position + len(buffer)
            update_into(buffer, view[position:end])
            position = end
        return out


@dataclass(frozen=True, slots=True)
class MseResult:
    """A finished handshake: the torrent, the method agreed, and how to carry on."""

    info_hash: bytes
    method: int  # RC4 or PLAINTEXT
    cipher: Rc4Cipher | None  # None for PLAINTEXT: the stream continues unencrypted
    payload: bytes  # the start of the peer's BitTorrent stream, decrypted (its IA first)


class _Handshake:
    """What both sides share: key agreement, buffering, resynchronisation, the outbox."""

    _initiator: bool

    def __init__(self, methods: int, random: RandomBytes, pad_cd_max: int) -> None:
        if not methods or methods & ~_KNOWN_METHODS:
            raise ValueError(f"crypto methods must be RC4, PLAINTEXT or both, not {methods:#x}")
        if not 0 <= pad_cd_max <= MAX_PAD:
            raise ValueError(f"PadC/PadD length must be 0..{MAX_PAD}, not {pad_cd_max}")
        self._methods = methods
        self._random = random
        self._pad_cd_max = pad_cd_max
        self._private = int.from_bytes(random(PRIVATE_KEY_LENGTH), "big")
        public = pow(GENERATOR, self._private, PRIME).to_bytes(KEY_LENGTH, "big")
        self._hello = public + self._random(self._pad_length(MAX_PAD))
        self._out = bytearray()
        self._buffer = bytearray()
        self._step: Callable[[], bool] = self._read_public_key
        self._secret = b""
        self._encryptor: CipherContext
        self._decryptor: CipherContext
        self._marker: tuple[bytes, int, str, Callable[[], bool]]
        self.result: MseResult | None = None

    # -- the adapter's side ------------------------------------------------------------------

    def receive(self, data: Buffer) -> None:
        """Consume bytes from the peer; raises ProtocolError when they break the handshake."""
        if self.result is not None:
            raise RuntimeError("the handshake is over: decrypt with result.cipher instead")
        self._buffer += data
        try:
            while self.result is None and self._step():
                pass
        except ProtocolError:
            # Whatever comes later is not looked at, nor kept.
            self._step = self._dead
            self._buffer.clear()
            raise

    def data_to_send(self) -> bytes:
        """Take the bytes queued for the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def buffered(self) -> int:
        """Bytes received and held while waiting for the rest of a handshake field."""
        return len(self._buffer)

    # -- shared steps ------------------------------------------------------------------------

    def _key_agreed(self) -> None:
        raise NotImplementedError

    def _read_public_key(self) -> bool:
        raw = self._take(KEY_LENGTH)
        if raw is None:
            return False
        theirs = int.from_bytes(raw, "big")
        # 0, 1, P-1 and anything >= P pin the shared secret to a few values whatever our key is.
        if not 1 < theirs < PRIME - 1:
            raise ProtocolError(f"the peer's Diffie-Hellman key is degenerate: {raw[:8].hex()}…")
        self._secret = pow(theirs, self._private, PRIME).to_bytes(KEY_LENGTH, "big")
        self._key_agreed()
        return True

    def _dead(self) -> bool:
        self._buffer.clear()
        raise ProtocolError("the handshake already failed")

    def _start_ciphers(self, info_hash: bytes) -> None:
        key_a = _sha1(b"keyA", self._secret, info_hash)
        key_b = _sha1(b"keyB", self._secret, info_hash)
        ours, theirs = (key_a, key_b) if self._initiator else (key_b, key_a)
        self._encryptor = _rc4(ours)
        self._decryptor = _rc4(theirs)

    def _pad_length(self, longest: int) -> int:
        return int.from_bytes(self._random(2), "big") % (longest + 1)

    def _zero_pad(self) -> bytes:
        # PadC and PadD are reserved for extensions; used as padding they must be zeros.
        return bytes(self._pad_length(self._pad_cd_max))

    def _take(self, length: int) -> bytes | None:
        if len(self._buffer) < length:
            return None
        chunk = bytes(self._buffer[:length])
        del self._buffer[:length]
        return chunk

    def _take_decrypted(self, length: int) -> bytes | None:
        chunk = self._take(length)
        return None if chunk is None else self._decryptor.update(chunk)

    def _resync_on(self, marker: bytes, window: int, what: str, then: Callable[[], bool]) -> None:
        """Skip the peer's padding up to marker, which must end within window bytes, then go on."""
        self._marker = (marker, window, what, then)
        self._step = self._resync

    def _resync(self) -> bool:
        marker, window, what, then = self._marker
        found = self._buffer.find(marker, 0, window)
        if found < 0:
            if len(self._buffer) >= window:
                raise ProtocolError(f"no {what} within {window} bytes of the peer's key")
            return False
        del self._buffer[: found + len(marker)]
        self._step = then
        return True

    def _finish(self, info_hash: bytes, method: int, initial_payload: bytes) -> bool:
        rest = bytes(self._buffer)
        self._buffer.clear()
        cipher = None
        if method == RC4:
            cipher = Rc4Cipher(self._encryptor, self._decryptor)
            rest = self._decryptor.update(rest)
        self.result = MseResult(info_hash, method, cipher, initial_payload + rest)
        return False


class MseInitiator(_Handshake):
    """The side that dialled: names the torrent, offers methods, may send its first bytes (IA)."""

    _initiator = True

    def __init__(
        self,
        info_hash: bytes,
        *,
        methods: int = RC4 | PLAINTEXT,
        initial_payload: bytes = b"",
        random: RandomBytes = os.urandom,
        pad_cd_max: int = 0,
    ) -> None:
        if len(info_hash) != 20:
            raise ValueError(f"an info-hash is 20 bytes, not {len(info_hash)}")
        if len(initial_payload) > MAX_INITIAL_PAYLOAD:
            raise ValueError(f"initial payload of {len(initial_payload)} bytes is too long")
        super().__init__(methods, random, pad_cd_max)
        self._info_hash = info_hash
        self._initial_payload = initial_payload
        self._selected = 0
        self._pad_d_length = 0
        self._out += self._hello

    def _key_agreed(self) -> None:
        self._start_ciphers(self._info_hash)
        pad_c = self._zero_pad()
        ia = self._initial_payload
        self._out += _sha1(b"req1", self._secret)
        self._out += _xor(skey_hash(self._info_hash), _sha1(b"req3", self._secret))
        self._out += self._encryptor.update(
            VC
            + self._methods.to_bytes(4, "big")
            + len(pad_c).to_bytes(2, "big")
            + pad_c
            + len(ia).to_bytes(2, "big")
            + ia
        )
        # B's encrypted VC is the first 8 bytes of its keystream; producing them here also
        # moves our decryptor past them, as reading the VC would.
        vc_marker = self._decryptor.update(VC)
        self._resync_on(vc_marker, VC_WINDOW, "encrypted verification constant", self._read_select)

    def _read_select(self) -> bool:
        head = self._take_decrypted(6)
        if head is None:
            return False
        selected = int.from_bytes(head[:4], "big")
        if selected not in (RC4, PLAINTEXT) or not selected & self._methods:
            raise ProtocolError(f"the peer selected crypto method {selected:#x}, not one offered")
        self._selected = selected
        self._pad_d_length = _pad_field(head[4:6], "PadD")
        self._step = self._skip_pad_d
        return True

    def _skip_pad_d(self) -> bool:
        if self._take_decrypted(self._pad_d_length) is None:
            return False
        return self._finish(self._info_hash, self._selected, b"")


class MseReceiver(_Handshake):
    """The side that accepted: learns the torrent from the peer's hashes and picks the method."""

    _initiator = False

    def __init__(
        self,
        lookup: Callable[[bytes], bytes | None],
        *,
        methods: int = RC4 | PLAINTEXT,
        prefer: int = RC4,
        random: RandomBytes = os.urandom,
        pad_cd_max: int = 0,
    ) -> None:
        # lookup maps skey_hash(info_hash) to info_hash, or None for a torrent we do not run.
        if prefer not in (RC4, PLAINTEXT):
            raise ValueError(f"prefer must be RC4 or PLAINTEXT, not {prefer:#x}")
        super().__init__(methods, random, pad_cd_max)
        self._lookup = lookup
        self._prefer = prefer
        self._info_hash = b""
        self._selected = 0
        self._pad_c_length = 0
        self._ia_length = 0

    def _key_agreed(self) -> None:
        # Our key goes out only now: a scanner that sends a few bytes learns nothing.
        self._out += self._hello
        req1 = _sha1(b"req1", self._secret)
        self._resync_on(req1, REQ1_WINDOW, "HASH('req1', S)", self._read_skey)

    def _read_skey(self) -> bool:
        masked = self._take(_HASH_LENGTH)
        if masked is None:
            return False
        info_hash = self._lookup(_xor(masked, _sha1(b"req3", self._secret)))
        if info_hash is None:
            raise ProtocolError("the peer asked for a torrent we do not have")
        self._info_hash = info_hash
        self._start_ciphers(info_hash)
        self._step = self._read_provide
        return True

    def _read_provide(self) -> bool:
        head = self._take_decrypted(len(VC) + 6)
        if head is None:
            return False
        if head[:8] != VC:
            raise ProtocolError(f"the peer's verification constant is {head[:8].hex()}, not zero")
        self._selected = self._select(int.from_bytes(head[8:12], "big"))
        self._pad_c_length = _pad_field(head[12:14], "PadC")
        self._step = self._read_ia_length
        return True

    def _select(self, provided: int) -> int:
        common = provided & self._methods
        if common & self._prefer:
            return self._prefer
        if common & RC4:
            return RC4
        if common & PLAINTEXT:
            return PLAINTEXT
        raise ProtocolError(f"the peer offers crypto methods {provided:#x}, none we accept")

    def _read_ia_length(self) -> bool:
        pad_and_length = self._take_decrypted(self._pad_c_length + 2)
        if pad_and_length is None:
            return False
        self._ia_length = int.from_bytes(pad_and_length[-2:], "big")
        self._step = self._read_ia
        return True

    def _read_ia(self) -> bool:
        ia = self._take_decrypted(self._ia_length)
        if ia is None:
            return False
        pad_d = self._zero_pad()
        self._out += self._encryptor.update(
            VC + self._selected.to_bytes(4, "big") + len(pad_d).to_bytes(2, "big") + pad_d
        )
        return self._finish(self._info_hash, self._selected, ia)


def _pad_field(raw: bytes, name: str) -> int:
    length = int.from_bytes(raw, "big")
    if length > MAX_PAD:
        raise ProtocolError(f"{name} of {length} bytes is longer than {MAX_PAD}")
    return length
