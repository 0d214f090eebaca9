"""Errors a user may see; each message is one plain sentence."""


class ShoalError(Exception):
    """An error whose message is fit to show a user as is."""


def inert(text: str) -> str:
    """text from outside, safe to print: unprintable characters shown as escapes, e.g. \\x1b."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
