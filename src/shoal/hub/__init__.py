"""The hub: a BitTorrent tracker (HTTP and UDP) and a Napster-style keyword index in one server."""

from shoal.errors import ShoalError

__all__ = ["HubError"]


class HubError(ShoalError):
    """The hub cannot be started, reached or used; the message says why in one sentence."""
