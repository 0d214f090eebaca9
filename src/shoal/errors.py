"""Errors a user may see; each message is one plain sentence."""


class ShoalError(Exception):
    """An error whose message is fit to show a user as is."""
