"""A node's identity: an Ed25519 key pair kept in the state folder, signing what it publishes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shoal.errors import ShoalError
from shoal.storage.resume import state_dir

__all__ = [
    "PUBLIC_KEY_HEX_LENGTH",
    "SIGNATURE_LENGTH",
    "Identity",
    "IdentityError",
    "public_key_problem",
    "verify",
]

PUBLIC_KEY_HEX_LENGTH = 64
SIGNATURE_LENGTH = 64
_RAW_KEY_LENGTH = 32
# A PEM private key is a few hundred bytes; anything far larger is not a key file.
_MAX_KEY_FILE = 4096

# Ed25519's curve (RFC 8032): -x^2 + y^2 = 1 + d x^2 y^2 over the integers modulo _P, whose
# points of prime order _L are the keys; 8 points have orders dividing 8 instead.
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_MINUS_ONE = pow(2, (_P - 1) // 4, _P)
_L = 2**252 + 27742317777372353535851937790883648493


class IdentityError(ShoalError):
    """The identity key file cannot be read or written."""


class Identity:
    """An Ed25519 key pair: the public half names the node, the private half signs for it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key_hex = raw.hex()

    @classmethod
    def generate(cls) -> Identity:
        """A new identity that lives only in memory."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path | None = None) -> Identity:
        """Load the key at path (default: state folder/identity.key), creating it if absent."""
        path = Path(path) if path is not None else state_dir() / "identity.key"
        try:
            with path.open("rb") as file:
                data = file.read(_MAX_KEY_FILE + 1)
        except FileNotFoundError:
            identity = cls.generate()
            if identity._save_new(path):
                return identity
            # Another process created it first: use that one, as it will.
            return cls.load_or_create(path)
        except OSError as exc:
            raise IdentityError(f"cannot read the identity key {path}: {exc.strerror}") from None
        return cls(_parse_key(data, path))

    def _save_new(self, path: Path) -> bool:
        """Write the private key as PEM, owner-only, unless path exists; whether it was written."""
        pem = self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file 0600, so the key is never readable by others, not even
            # for a moment. Linking the whole file into place makes a crash leave no key or a
            # complete one, and fails rather than replace a key another process just made.
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".identity-")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(pem)
                    file.flush()
                    os.fsync(file.fileno())
                os.link(temp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(temp)
        except OSError as exc:
            raise IdentityError(f"cannot write the identity key {path}: {exc.strerror}") from None
        return True

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of data."""
        return self._private_key.sign(data)

    def __repr__(self) -> str:
        return f"Identity({self.public_key_hex})"


def _parse_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    """A private key from PEM or from its raw 32 bytes."""
    if len(data) == _RAW_KEY_LENGTH:
        return Ed25519PrivateKey.from_private_bytes(data)
    problem = IdentityError(f"the identity key {path} is not an Ed25519 private key")
    if len(data) > _MAX_KEY_FILE:
        raise problem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise problem from None
    if not isinstance(key, Ed25519PrivateKey):
        raise problem
    return key


def _decode_point(encoded: bytes) -> tuple[int, int] | None:
    """The curve point (x, y) that 32 bytes encode, or None unless they are its one encoding."""
    number = int.from_bytes(encoded, "little")
    y, x_is_odd = number & ((1 << 255) - 1), number >> 255
    if y >= _P:
        return None
    # x^2 = (y^2 - 1) / (d y^2 + 1); the square root as RFC 8032 section 5.1.3 takes it.
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P:
        if (v * x * x + u) % _P:
            return None
        x = x * _SQRT_MINUS_ONE % _P
    if x == 0 and x_is_odd:
        return None  # "minus zero": a second encoding of a point with x = 0
    if x & 1 != x_is_odd:
        x = _P - x
    return x, y


def _of_small_order(point: tuple[int, int]) -> bool:
    """Whether 8 * point is the neutral point, as for the 8 points of order 1, 2, 4 or 8."""
    # Three doublings in projective coordinates (X : Y : Z), so without a field inversion,
    # by the curve's doubling formula (complete: no point is left out).
    x, y, z = point[0], point[1], 1
    for _ in range(3):
        xx, yy, zz = x * x % _P, y * y % _P, z * z % _P
        f = yy - xx
        j = f - 2 * zz
        x, y, z = ((x + y) ** 2 - xx - yy) * j % _P, f * (-xx - yy) % _P, f * j % _P
    return x == 0 and (y - z) % _P == 0


def public_key_problem(encoded: bytes) -> str | None:
    """Why encoded is no Ed25519 public key to trust, or None if it is one."""
    # OpenSSL accepts both: a key of small order verifies forged signatures (with the neutral
    # key, R = neutral and S = 0 verify every message), and a second encoding of a key would
    # be a second name for it.
    point = _decode_point(encoded) if len(encoded) == _RAW_KEY_LENGTH else None
    if point is None:
        return "not the canonical encoding of an Ed25519 curve point"
    if _of_small_order(point):
        return "a point of small order, for which anyone can forge signatures"
    return None


def _plausible_signature(signature: bytes) -> bool:
    """Whether R is a canonical point not of small order and S is reduced (below L)."""
    r = _decode_point(signature[:32])
    return (
        r is not None and not _of_small_order(r) and int.from_bytes(signature[32:], "little") < _L
    )


def verify(public_key_hex: str, data: bytes, signature: bytes) -> bool:
    """Whether signature is the Ed25519 signature of data by the key in public_key_hex."""
    if len(public_key_hex) != PUBLIC_KEY_HEX_LENGTH or len(signature) != SIGNATURE_LENGTH:
        return False
    try:
        encoded = bytes.fromhex(public_key_hex)
    except ValueError:
        return False
    if public_key_problem(encoded) is not None or not _plausible_signature(signature):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(encoded).verify(signature, data)
    except (ValueError, InvalidSignature):
        return False
    return True
