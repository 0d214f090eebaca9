"""Every known header as a tree node: its height, the work of the chain it ends, what we know
of its block, and a skip link so that any ancestor is found in a few steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from .primitives import BlockHeader


def skip_height(height: int) -> int:
    """The ancestor height a block at height links to: height with its lowest set bit
    cleared, so a walk down by these links and parents takes logarithmically many steps."""
    return height & (height - 1)


@dataclass(eq=False)
class BlockIndex:
    """A known header and what the chain knows of it."""

    hash: bytes
    header: BlockHeader
    height: int
    work: int  # cumulative: of this block and every ancestor
    parent: BlockIndex | None = field(repr=False)
    has_data: bool  # its body is stored
    invalid: bool  # it or an ancestor breaks a rule
    complete: bool = False  # it and every ancestor have data: it can be connected
    sequence: int = 0  # when its data arrived: of two chains of equal work, the first wins
    skip: BlockIndex | None = field(default=None, repr=False)
    children: list[BlockIndex] = field(default_factory=list, repr=False)

    def link(self) -> None:
        """Set the skip link and join the parent's children (the parent's links are set)."""
        if self.parent is not None:
            self.skip = self.parent.ancestor(skip_height(self.height))
            self.parent.children.append(self)

    def ancestor(self, height: int) -> BlockIndex:
        """The ancestor at height (itself at its own height)."""
        if not 0 <= height <= self.height:
            raise ValueError(f"no ancestor at height {height} of a block at {self.height}")
        walk = self
        while walk.height > height:
            skip = walk.skip
            if skip is not None and skip.height >= height:
                walk = skip
            else:
                assert walk.parent is not None  # height > 0 here
                walk = walk.parent
        return walk

    def times(self, count: int) -> list[int]:
        """The times of this block and its ancestors, count at most, newest first."""
        times: list[int] = []
        walk: BlockIndex | None = self
        while walk is not None and len(times) < count:
            times.append(walk.header.time)
            walk = walk.parent
        return times
