"""File paths from torrents: untrusted, so checked before they touch the file system."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from shoal.errors import ShoalError, inert

__all__ = ["MAX_PATH_BYTES", "MAX_PATH_DEPTH", "MetainfoError", "resolve_inside", "safe_components"]

_DRIVE = re.compile(r"[A-Za-z]:")
_FORBIDDEN = ("/", "\\", "\0")

# Neither libtorrent nor Transmission bounds depth (file systems do: PATH_MAX is 4096 bytes on
# Linux), but without a bound a small torrent can name a path of thousands of folders.
MAX_PATH_DEPTH = 64
MAX_PATH_BYTES = 4096
# At most this much of a path is shown in an error message: its start and its end.
_SHOWN_CHARACTERS = 200


class MetainfoError(ShoalError):
    """A torrent, magnet link or path in one is invalid or unsafe."""


def _display(components: Sequence[bytes | str]) -> str:
    """Join components with '/' for a message, escaping bytes that are not printable text."""
    text = "/".join(
        part.decode("utf-8", "backslashreplace")
        if isinstance(part, bytes)
        else part.encode("utf-8", "backslashreplace").decode()
        for part in components[:MAX_PATH_DEPTH]
    )
    if len(components) > MAX_PATH_DEPTH:
        text += "/..."
    text = inert(text)
    if len(text) > _SHOWN_CHARACTERS:
        half = _SHOWN_CHARACTERS // 2
        text = f"{text[:half]}...{text[-half:]}"
    return text


def safe_components(components: Sequence[bytes | str]) -> tuple[str, ...]:
    """Return components as UTF-8 names, or raise MetainfoError if unsafe, too deep or too long."""
    if not components:
        raise MetainfoError("the torrent has a file with an empty path")
    if len(components) > MAX_PATH_DEPTH:
        raise MetainfoError(
            f"the torrent has a file path of {len(components)} parts, more than the"
            f" {MAX_PATH_DEPTH} shoal accepts: {_display(components)}"
        )
    size = len(components) - 1  # the separators
    names: list[str] = []
    for part in components:
        try:
            # Encoding a str catches the lone surrogates os.fsdecode makes of non-UTF-8 names.
            name = part.decode() if isinstance(part, bytes) else part.encode().decode()
        except UnicodeError:
            raise MetainfoError(
                f"the torrent has a file path that is not UTF-8: {_display(components)}"
            ) from None
        if (
            name in ("", ".", "..")
            or any(char in name for char in _FORBIDDEN)
            or _DRIVE.match(name)
        ):
            raise MetainfoError(f"the torrent has an unsafe file path: {_display(components)}")
        size += len(part) if isinstance(part, bytes) else len(name.encode())
        names.append(name)
    if size > MAX_PATH_BYTES:
        raise MetainfoError(
            f"the torrent has a file path of {size} bytes, more than the {MAX_PATH_BYTES}"
            f" shoal accepts: {_display(components)}"
        )
    return tuple(names)


def resolve_inside(root: Path, components: tuple[str, ...]) -> Path:
    """Return root joined with components, or raise MetainfoError if it resolves outside root."""
    target = root.joinpath(*components)
    # realpath follows any symlinks already on disk, which a lexical check would miss.
    real_root = Path(os.path.realpath(root))
    real_target = Path(os.path.realpath(target))
    if real_target == real_root or not real_target.is_relative_to(real_root):
        raise MetainfoError(
            f"the file path {_display(components)} leads outside the download folder {root}"
        )
    return target
