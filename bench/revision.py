"""What the benchmarks record of the code they measured: the commit, and whether src/ had
changes not committed."""

from __future__ import annotations

import subprocess


def commit() -> str:
    """The short hash of HEAD, and a note if src/ has changes not committed."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"{head or 'unknown'}{' with changes under src/ not committed' if dirty else ''}"
