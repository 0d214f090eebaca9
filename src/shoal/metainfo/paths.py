"""File paths from torrents: untrusted, so checked before they touch the file system."""

from __future__ import annotations

import os
import re
from pathlib import Path

from shoal.errors import ShoalError

__all__ = ["MetainfoError", "resolve_inside", "safe_components"]

_DRIVE = re.compile(r"[A-Za-z]:")
_FORBIDDEN = ("/", "\\", "\0")


class MetainfoError(ShoalError):
    """A torrent, magnet link or path in one is invalid or unsafe."""


def _display(components: list[bytes | str] | tuple[str, ...]) -> str:
    """Join components with '/' for a message, escaping bytes that are not printable text."""
    text = "/".join(
        part.decode("utf-8", "backslashreplace")
        if isinstance(part, bytes)
        else part.encode("utf-8", "backslashreplace").decode()
        for part in components
    )
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def safe_components(components: list[bytes | str]) -> tuple[str, ...]:
    """Return components as UTF-8 names, or raise MetainfoError if any could leave its folder."""
    if not components:
        raise MetainfoError("the torrent has a file with an empty path")
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
        names.append(name)
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
