"""shoal: a peer-to-peer network that speaks BitTorrent."""

__version__ = "0.1.0"
