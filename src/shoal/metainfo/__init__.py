"""Torrent metainfo: .torrent files, magnet links and the file paths they name."""

from shoal.metainfo.magnet import Magnet, is_magnet, make_magnet, parse_magnet, parse_peer
from shoal.metainfo.paths import MetainfoError, resolve_inside, safe_components
from shoal.metainfo.torrent import (
    FileEntry,
    Torrent,
    create_torrent,
    load_torrent,
    parse_info,
    parse_torrent,
)

__all__ = [
    "FileEntry",
    "Magnet",
    "MetainfoError",
    "Torrent",
    "create_torrent",
    "is_magnet",
    "load_torrent",
    "make_magnet",
    "parse_info",
    "parse_magnet",
    "parse_peer",
    "parse_torrent",
    "resolve_inside",
    "safe_components",
]
