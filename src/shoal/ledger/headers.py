"""The ledger core's header exchange, between the transaction relay and `core.LedgerNode`:
getheaders asked with our locator and answered from the active chain, headers taken into the
chain's tree (a branch far behind ours left out), and new blocks announced by their headers
as BIP 130's sendheaders.
"""

from __future__ import annotations

import itertools

from .messages import MAX_HEADERS, MAX_LOCATOR, GetHeaders, Headers
from .peers import Peer
from .pow import target_from_bits, work_of
from .primitives import ZERO_HASH, BlockHeader
from .relay import TxRelay
from .validation import Invalid

MAX_UNCONNECTING = 10  # header batches in a row that do not connect before a peer is dropped
LOW_WORK_MARGIN = 288  # blocks of work a new branch may trail our best header by and be kept


class HeaderExchange(TxRelay):
    """A node's links, trading headers besides transactions."""

    def _headers_accepted(self) -> None:
        """New headers went into the chain's tree (the layer above retries its orphans)."""

    def _headers_answer(self, request: GetHeaders) -> tuple[bytes, bytes]:
        """The headers message's command and payload that answer a getheaders."""
        found = self.chain.headers_after(list(request.locator), request.stop, MAX_HEADERS)
        return Headers.command, Headers(tuple(found)).encode()

    def _ask_headers(self, peer: Peer, after: bytes | None = None) -> None:
        """Send getheaders with our active chain's locator (led by after, if given)."""
        locator = self.chain.locator()
        if after is not None:
            locator.insert(0, after)
        peer.headers_asked_at = self._now
        self._send(peer, GetHeaders(tuple(locator[:MAX_LOCATOR]), ZERO_HASH))

    def _on_headers(self, peer: Peer, headers: tuple[BlockHeader, ...]) -> None:
        peer.headers_asked_at = None
        if not headers:
            return
        if any(child.previous != parent.hash for parent, child in itertools.pairwise(headers)):
            self._drop(peer, "headers that do not form a chain", ban=True)
            return
        if self.chain.get(headers[0].previous) is None:
            # A branch we have not heard of: ask again from our locator, a few times.
            peer.unconnecting += 1
            if peer.unconnecting > MAX_UNCONNECTING:
                self._drop(peer, "headers that never connect")
            else:
                self._ask_headers(peer)
            return
        peer.unconnecting = 0
        if self._low_work(headers):
            return  # a branch far behind ours: not worth our memory (no ban: it may be honest)
        for header in headers:
            try:
                index = self.chain.accept_header(header, self._now)
            except Invalid as error:
                if error.ban:
                    self._drop(peer, f"{error.reason}: {error.detail}", ban=True)
                return
            peer.saw(index)
        if len(headers) == MAX_HEADERS:
            self._ask_headers(peer, after=headers[-1].hash)
        self._headers_accepted()

    def _low_work(self, headers: tuple[BlockHeader, ...]) -> bool:
        """Whether the headers we lack among these end a branch whose work (as their bits
        claim; accept_header checks them) falls more than LOW_WORK_MARGIN blocks' worth below
        our best header's. Headers that meet their proof of work cost little on an easy chain,
        and every one kept costs memory: a branch that far behind could only win by outgrowing
        ours, and then its headers come again."""
        known = 0
        while known < len(headers) and self.chain.get(headers[known].hash) is not None:
            known += 1
        if known == len(headers):
            return False
        parent = self.chain.get(headers[known].previous)
        assert parent is not None  # the first connects, and so does each after it
        try:
            claimed = sum(work_of(target_from_bits(h.bits)) for h in headers[known:])
        except ValueError:
            return False  # a malformed target: accept_header refuses it, and says why
        best = self.chain.best_header
        margin = LOW_WORK_MARGIN * work_of(target_from_bits(best.header.bits))
        return parent.work + claimed < best.work - margin

    def _announce_headers(self, headers: list[BlockHeader], source: Peer | None) -> None:
        """Announce new blocks by their headers, as BIP 130's sendheaders: a peer fetches the
        body at once, two messages a hop sooner than inv then getheaders would let it."""
        for peer in self._ready_peers():
            if peer is source:
                continue
            # From the first it lacks on: a headers message must be one unbroken chain.
            first = next((i for i, h in enumerate(headers) if h.hash not in peer.known), None)
            fresh = [] if first is None else headers[first:]
            for header in fresh:
                peer.known.add(header.hash)
            if fresh:
                self._send(peer, Headers(tuple(fresh)))
