"""Mining in a worker process: the event loop builds a block from the mempool, the worker
searches nonces a slice at a time, and a new tip makes the loop start over on it."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import ShoalError
from ..ledger.mining import block_template, solve
from ..ledger.primitives import Block, hash_hex
from ..ledger.validation import Invalid

if TYPE_CHECKING:
    from .ledger import LedgerService

log = logging.getLogger(__name__)

# Nonces a worker tries before the loop looks at the tip again (about 0.2 s of one core).
SLICE = 100_000
NONCES = 1 << 32


class Miner:
    """Builds and solves blocks paying lock, and hands each found to the ledger service."""

    def __init__(self, service: LedgerService, block_time: float) -> None:
        self.service = service
        self.block_time = block_time
        # spawn: a fork of a process running an event loop and threads is not safe.
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._task: asyncio.Task[None] | None = None
        self._new_tip = asyncio.Event()
        self._rng = random.Random()
        self.found = 0

    def start(self, lock: bytes) -> None:
        """Mine blocks paying lock until stopped."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(lock))

    def stop(self) -> None:
        """Stop mining and the worker."""
        if self._task is not None:
            self._task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def tip_changed(self) -> None:
        """Another block became the tip: what is being solved is stale."""
        self._new_tip.set()

    async def _run(self, lock: bytes) -> None:
        try:
            while True:
                if self.service.params.retarget_interval == 0:
                    await self._pause()
                block = await self.mine_one(lock)
                if block is None:
                    continue
                try:
                    self.service.submit_block(block)
                except Invalid as error:  # e.g. our clock far behind the chain's: try again
                    log.warning("our block was refused: %s (%s)", error.detail, error.reason)
        except asyncio.CancelledError:
            raise
        except Exception:  # a miner that dies must say why, not vanish
            log.exception("the miner stopped")

    async def _pause(self) -> None:
        """On a chain without retarget, wait as long as the search would have taken (a new
        tip meanwhile does not cut the wait short: each try is a fresh draw anyway)."""
        await asyncio.sleep(self._rng.expovariate(1.0 / self.block_time))

    async def mine_one(self, lock: bytes) -> Block | None:
        """A block on the current tip paying lock, or None if another tip came first."""
        chain = self.service.chain
        if chain is None:
            return None
        loop = asyncio.get_running_loop()
        self._new_tip.clear()
        extra_nonce = self._rng.getrandbits(32)
        mempool = self.service.mempool
        template = block_template(chain, mempool, lock, self.service.now(), extra_nonce)
        start = 0
        while not self._new_tip.is_set():
            nonce = await loop.run_in_executor(
                self.pool, solve, template.header, start, min(SLICE, NONCES - start)
            )
            if nonce is not None:
                block = Block(replace(template.header, nonce=nonce), template.transactions)
                self.found += 1
                log.info("mined block %s", hash_hex(block.hash))
                return block
            start += SLICE
            if start >= NONCES:  # every nonce tried: a new coinbase gives new ones
                extra_nonce += 1
                template = block_template(chain, mempool, lock, self.service.now(), extra_nonce)
                start = 0
        return None

    async def generate(self, count: int, lock: bytes) -> list[bytes]:
        """Mine count blocks at once paying lock (on the local chain, as regtest's
        generatetoaddress); their hashes."""
        hashes: list[bytes] = []
        while len(hashes) < count:
            block = await self.mine_one(lock)
            if block is None:
                continue
            try:
                self.service.submit_block(block)
            except Invalid as error:
                raise ShoalError(f"the block mined was refused: {error.detail}") from None
            hashes.append(block.hash)
        return hashes
