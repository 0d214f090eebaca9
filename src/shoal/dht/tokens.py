"""Announce tokens (BEP 5): proof that an announcer asked get_peers from its own IP lately.

A token is a keyed hash of the requester's IP under a secret that changes every five minutes;
the current and the previous secret are accepted, so a token is good for five to ten minutes
and nothing is remembered per requester.
"""

from __future__ import annotations

import hashlib
import hmac
import random

ROTATE_EVERY = 300.0
TOKEN_LENGTH = 8


class Tokens:
    """Issues and checks announce tokens."""

    def __init__(self, rng: random.Random, now: float) -> None:
        self._rng = rng
        self._secrets = [rng.randbytes(16), rng.randbytes(16)]  # current, previous
        self._rotated = now

    def rotate(self, now: float) -> None:
        """Start a new secret if the current one is old enough."""
        if now - self._rotated >= ROTATE_EVERY:
            self._secrets = [self._rng.randbytes(16), self._secrets[0]]
            self._rotated = now

    def next_rotation(self) -> float:
        """When rotate() next has something to do."""
        return self._rotated + ROTATE_EVERY

    def issue(self, ip: bytes) -> bytes:
        """The token for a requester's packed IP."""
        return self._token(self._secrets[0], ip)

    def valid(self, token: object, ip: bytes) -> bool:
        """Whether token was issued to ip under the current or the previous secret."""
        if not isinstance(token, bytes):
            return False
        return any(hmac.compare_digest(token, self._token(s, ip)) for s in self._secrets)

    @staticmethod
    def _token(secret: bytes, ip: bytes) -> bytes:
        return hashlib.blake2b(ip, key=secret, digest_size=TOKEN_LENGTH).digest()
