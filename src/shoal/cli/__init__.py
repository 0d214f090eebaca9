"""The shoal command: create, inspect, share, seed and get torrents; search; run a hub or a
DHT node; simulate."""

from . import dht, hub, ledger, search, sim, torrents
from .common import main

__all__ = ["dht", "hub", "ledger", "main", "search", "sim", "torrents"]
