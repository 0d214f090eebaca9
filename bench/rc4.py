"""Benchmark: RC4 throughput of shoal's MSE cipher against the machine's limits.

Three rates, each the best of several rounds over the same buffers:

  decrypt        Rc4Cipher.decrypt on 64 KiB reads, as the adapter does on each data_received
  encrypt_many   Rc4Cipher.encrypt_many on 16 piece messages (13-byte header + 16 KiB block)
  copy           allocating and copying the same 64 KiB buffers (the floor for any transform
                 that returns a new buffer)
  openssl        `openssl speed -evp rc4` on 64 KiB blocks, when this OpenSSL still has RC4

and prints each cipher rate as a fraction of copy and of openssl.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable

from shoal.wire.mse import MseInitiator, MseReceiver, Rc4Cipher, skey_hash

READ = 64 * 1024
BLOCK = 16 * 1024
INFO_HASH = bytes(range(20))


def cipher() -> Rc4Cipher:
    """A cipher from a real in-memory handshake."""
    initiator = MseInitiator(INFO_HASH, methods=2)
    receiver = MseReceiver({skey_hash(INFO_HASH): INFO_HASH}.get)
    receiver.receive(initiator.data_to_send())
    initiator.receive(receiver.data_to_send())
    receiver.receive(initiator.data_to_send())
    initiator.receive(receiver.data_to_send())
    assert initiator.result is not None and initiator.result.cipher is not None
    return initiator.result.cipher


def rate(work: Callable[[], int], seconds: float, rounds: int) -> float:
    """Best bytes per second of work() over rounds of about seconds each."""
    best = 0.0
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            done += work()
        best = max(best, done / (time.perf_counter() - start))
    return best


def openssl_rate(seconds: int) -> float | None:
    """RC4 bytes per second from `openssl speed` on 64 KiB blocks, None if unavailable."""
    binary = shutil.which("openssl")
    if binary is None:
        return None
    # OpenSSL 3 keeps RC4 in the legacy provider; older versions take no -provider flag.
    for extra in (["-provider", "legacy", "-provider", "default"], []):
        command = [binary, "speed", *extra, "-evp", "rc4", "-bytes", str(READ)]
        command += ["-seconds", str(seconds)]
        try:
            output = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = re.search(r"^rc4\s+([\d.]+)k", output, re.IGNORECASE | re.MULTILINE)
        if match:
            return float(match.group(1)) * 1000
    return None


def main() -> None:
    """Measure and print the rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement")
    args = parser.parse_args()

    reads = [os.urandom(READ) for _ in range(16)]
    header = bytes(13)
    messages = [part for _ in range(16) for part in (header, os.urandom(BLOCK))]
    message_bytes = sum(map(len, messages))
    rc4 = cipher()

    def decrypt() -> int:
        for read in reads:
            rc4.decrypt(read)
        return READ * len(reads)

    def encrypt_many() -> int:
        rc4.encrypt_many(messages)
        return message_bytes

    def encrypt_joined() -> int:
        rc4.encrypt(b"".join(messages))
        return message_bytes

    def copy() -> int:
        for read in reads:
            bytearray(read)
        return READ * len(reads)

    rates = {
        "decrypt": rate(decrypt, args.seconds, args.rounds),
        "encrypt_many": rate(encrypt_many, args.seconds, args.rounds),
        "encrypt(join)": rate(encrypt_joined, args.seconds, args.rounds),
        "copy": rate(copy, args.seconds, args.rounds),
    }
    limit = openssl_rate(max(1, round(args.seconds)))
    for name, value in rates.items():
        print(f"{name:>14}: {value / 1e6:9.1f} MB/s")
    print(f"{'openssl speed':>14}: " + (f"{limit / 1e6:9.1f} MB/s" if limit else "unavailable"))
    for name in ("decrypt", "encrypt_many", "encrypt(join)"):
        ratios = f"{rates[name] / rates['copy']:.3f} of copy"
        if limit:
            ratios += f", {rates[name] / limit:.3f} of openssl"
        print(f"{name:>14}: {ratios}")


if __name__ == "__main__":
    main()
