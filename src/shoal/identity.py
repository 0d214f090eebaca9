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

__all__ = ["PUBLIC_KEY_HEX_LENGTH", "SIGNATURE_LENGTH", "Identity", "IdentityError", "verify"]

PUBLIC_KEY_HEX_LENGTH = 64
SIGNATURE_LENGTH = 64
_RAW_KEY_LENGTH = 32
# A PEM private key is a few hundred bytes; anything far larger is not a key file.
_MAX_KEY_FILE = 4096


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


def verify(public_key_hex: str, data: bytes, signature: bytes) -> bool:
    """Whether signature is the Ed25519 signature of data by the key in public_key_hex."""
    if len(public_key_hex) != PUBLIC_KEY_HEX_LENGTH or len(signature) != SIGNATURE_LENGTH:
        return False
    try:
        public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        public_key.verify(signature, data)
    except (ValueError, InvalidSignature):
        return False
    return True
