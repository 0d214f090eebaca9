"""Tracker client: HTTP and UDP announces and scrapes, across BEP 12 tiers."""

from .client import AnnounceStats, TrackerClient, scrape
from .messages import (
    AnnounceParams,
    AnnounceResponse,
    Event,
    ScrapeResult,
    TrackerError,
    TrackerRefused,
)
from .schedule import TrackerStatus
from .udp import ConnectionCache

__all__ = [
    "AnnounceParams",
    "AnnounceResponse",
    "AnnounceStats",
    "ConnectionCache",
    "Event",
    "ScrapeResult",
    "TrackerClient",
    "TrackerError",
    "TrackerRefused",
    "TrackerStatus",
    "scrape",
]
