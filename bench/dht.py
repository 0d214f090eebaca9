"""Benchmark: shoal's Mainline DHT on real loopback sockets, against libtorrent in the same network.

    .venv/bin/python bench/dht.py                       # 100, 300 and 1000 nodes, 50 lookups
    .venv/bin/python bench/dht.py --quick               # 100 nodes
    .venv/bin/python bench/dht.py --nodes 300 --nodes 3000 --lookups 100 --json

At each size N, N - 1 shoal nodes (a `DhtService` on its own UDP socket on 127.0.0.1 each) run
in worker processes (one per 400 nodes, at most one per core) and join through the first; the
N-th, the asker, runs alone in this process. Once every table holds 8 nodes, a libtorrent
session joins too (its DHT bootstrapped from the first shoal node: loopback only, never the
public routers). Then, one at a time and in rotating order, each of these makes L lookups of
fresh random targets:

  shoal find_node       DhtService.find_node, from the call to its LookupDone
  shoal get_peers       DhtNode.get_peers through the asker's service, the call to LookupDone
  libtorrent get_peers  session.dht_get_peers, from its traversal's "NEW" log line to its
                        "COMPLETED" line (dht_log_alert timestamps, libtorrent's own clock)

libtorrent posts dht_get_peers_reply_alert only for replies that carry peers (none do for a
random target) and nothing when a lookup ends, so its DHT traversal log is the one signal of
the end: "COMPLETED" is written when the 8 closest nodes it knows have answered and none of
them is still being asked, much as a shoal lookup ends (shoal asks 3 at a time, libtorrent 5).
The time from the call to the bench reading that line is printed too, as a check.

Messages are the queries a lookup sent (INVOKE lines for libtorrent); hops, how many steps
from the asker's own table the closest node that answered was found (ADD and RESPONSE lines
for libtorrent); a lookup succeeds if that node is the closest live node of the network (the
bench knows every id), and a miss says how many live nodes were closer. The ratio
shoal/libtorrent compares get_peers lookups made in the same network at the same time; the
machine may be busy, so quote ratios. libtorrent keeps its defaults but two that loopback
needs: every node is 127.0.0.1, so its per-IP flood guard and its DHT upload cap are lifted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import re
import resource
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import libtorrent as lt

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

# The loopback settings live with the tests; ltclient is plain code outside pytest.
import ltclient  # noqa: E402

from shoal.addresses import Address  # noqa: E402
from shoal.datagrams import DatagramPort  # noqa: E402
from shoal.dht.core import LookupDone  # noqa: E402
from shoal.node.dht import DhtService  # noqa: E402

LOOPBACK = ltclient.LOOPBACK
K = 8
DEFAULT_NODES = (100, 300, 1000)
# One worker process per this many nodes, up to the number of cores.
NODES_PER_WORKER = 400
# Descriptors a process needs besides its nodes' sockets.
SPARE_FILES = 64
LOOKUP_TIMEOUT = 60.0
JOIN_TIMEOUT = 60.0
# A few tables may stay short for good: once no more than this share of them is short and
# none of those has changed for STALLED seconds (a bootstrap retry and a maintenance round
# fit in), the lookups go ahead and the report says so.
SHORT_SHARE = 0.01
STALLED = 60.0
SHOAL_FIND_NODE = "shoal find_node"
SHOAL_GET_PEERS = "shoal get_peers"
LT_GET_PEERS = "libtorrent get_peers"
KINDS = (SHOAL_FIND_NODE, SHOAL_GET_PEERS, LT_GET_PEERS)


class BenchError(Exception):
    """The bench cannot go on; the message says why, in one sentence."""


def log(message: str) -> None:
    """Progress goes to stderr so that stdout stays the result (and valid JSON with --json)."""
    print(message, file=sys.stderr, flush=True)


def fill_timeout(nodes: int) -> float:
    """How long the tables of nodes may take to fill before the bench gives up."""
    return 90.0 + nodes / 20


def raise_file_limit(needed: int) -> None:
    """Allow this process needed open files, or say why it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"a process needs {needed} open files and the limit is {hard}; use more --workers"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclass
class RunningNode:
    """A shoal DHT node on its own loopback UDP port."""

    service: DhtService
    datagrams: DatagramPort
    port: int

    @property
    def id(self) -> bytes:
        """The node's id."""
        assert self.service.core is not None
        return self.service.core.node_id

    def table_size(self) -> int:
        """How many nodes its routing table holds."""
        core = self.service.core
        return len(core.table) if core is not None else 0

    def stop(self) -> None:
        """Stop the node and close its socket."""
        self.service.stop()
        self.datagrams.close()


async def start_node(
    routers: Sequence[Address], kind: type[DhtService] = DhtService
) -> RunningNode:
    """A shoal DHT node on a fresh loopback UDP port, joining through routers."""
    loop = asyncio.get_running_loop()
    datagrams = DatagramPort()
    transport, _ = await loop.create_datagram_endpoint(lambda: datagrams, local_addr=(LOOPBACK, 0))
    port = transport.get_extra_info("sockname")[1]
    service = kind(datagrams, None)
    node = RunningNode(service, datagrams, port)
    try:
        # No state folder, so nothing is kept whatever the port: port_fixed changes nothing.
        await service.start(routers, port, port_fixed=False)
    except BaseException:
        node.stop()
        raise
    return node


class Asker(DhtService):
    """A DHT service whose get_peers lookups report how they went, like find_node's."""

    async def get_peers(self, info_hash: bytes) -> LookupDone:
        """Look up the peers of info_hash (announcing nothing); the lookup's LookupDone."""
        assert self.core is not None
        return await self._wait(self.core.get_peers(info_hash, self.loop.time()))


# -- the worker processes ------------------------------------------------------------------------


class Worker:
    """Many shoal DHT nodes on one event loop, run by commands from the bench over a pipe."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.nodes: list[RunningNode] = []

    async def serve(self) -> None:
        """Answer commands until told to stop (or the bench goes away)."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.connection.fileno(), readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                while self.connection.poll():
                    command, *args = self.connection.recv()
                    if command == "stop":
                        return
                    try:
                        reply: tuple[str, object] = ("ok", await self.run(command, *args))
                    except Exception as error:  # the bench says it in one sentence
                        reply = ("error", f"{type(error).__name__}: {error}")
                    self.connection.send(reply)
        except EOFError:
            return  # the bench is gone
        finally:
            loop.remove_reader(self.connection.fileno())
            for node in self.nodes:
                node.stop()
            self.nodes.clear()

    async def run(self, command: str, *args: Any) -> object:
        """Carry out one command; its result goes back to the bench."""
        if command == "start":
            count, router = args
            raise_file_limit(len(self.nodes) + count + SPARE_FILES)
            started = []
            for _ in range(count):
                # The very first node of the network has no router; the others join through it.
                routers = [(LOOPBACK, router)] if router else []
                node = await start_node(routers)
                self.nodes.append(node)
                started.append((node.port, node.id))
                router = router or node.port
            return started
        if command == "tables":
            return [node.table_size() for node in self.nodes]
        if command == "counters":
            cores = [node.service.core for node in self.nodes if node.service.core is not None]
            return sum(c.queries_sent for c in cores), sum(c.queries_answered for c in cores)
        raise BenchError(f"a worker was sent an unknown command: {command!r}")


def worker_main(connection: Connection) -> None:
    """A worker process: its nodes stop when the bench says so or goes away, not on Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(Worker(connection).serve())


class Workers:
    """The worker processes of one network, and the commands to them."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.connections: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=worker_main, args=(theirs,), daemon=True)
            process.start()
            theirs.close()
            self.connections.append(ours)
            self.processes.append(process)

    async def ask_all(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send commands[i] to worker i (all at once), and return their results."""
        for connection, command in zip(self.connections, commands, strict=False):
            connection.send(command)
        connections = self.connections[: len(commands)]
        replies = await asyncio.gather(*(asyncio.to_thread(self._reply, c) for c in connections))
        return list(replies)

    async def ask_each(self, *command: Any) -> list[Any]:
        """Send the same command to every worker; their results, in order."""
        return await self.ask_all([command] * len(self.connections))

    @staticmethod
    def _reply(connection: Connection) -> object:
        try:
            status, value = connection.recv()
        except (EOFError, OSError):
            raise BenchError("a worker process running shoal nodes died") from None
        if status != "ok":
            raise BenchError(f"a worker process failed: {value}")
        return value

    def close(self) -> None:
        """Stop the workers (their nodes first), and wait for them to end."""
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.send(("stop",))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for connection in self.connections:
            connection.close()


# -- libtorrent ---------------------------------------------------------------------------------


TRAVERSAL_LINE = re.compile(r"\[(\d+)\] (.*)")
LOGGED_ID = re.compile(r"id: ([0-9a-f]{40})")


@dataclass
class Traversal:
    """One libtorrent DHT traversal, read from its log lines."""

    started: datetime
    ended: datetime | None = None
    queries: int = 0
    hop: dict[str, int] = field(default_factory=dict)  # node id (hex) -> hops from our table
    responder: str | None = None  # the node whose reply the lines that follow come from
    reporting: bool = False  # past "DONE": the nodes that answered, closest first
    closest: str | None = None
    seen_after: float = 0.0  # seconds from the call to the bench reading "COMPLETED"

    def read(self, line: str, at: datetime) -> None:
        """Take one of the traversal's log lines."""
        if line.startswith("INVOKE "):
            self.queries += 1
        elif line.startswith("ADD "):
            found = LOGGED_ID.search(line)
            if found is not None:
                parent = self.hop.get(self.responder, 0) if self.responder else 0
                self.hop.setdefault(found[1], parent + 1)
        elif line.startswith("RESPONSE "):
            found = LOGGED_ID.search(line)
            self.responder = found[1] if found is not None else None
        elif line.endswith(" DONE"):
            self.reporting = True
        elif self.reporting and self.closest is None and line.startswith("id: "):
            found = LOGGED_ID.match(line)
            self.closest = found[1] if found is not None else None
        elif line.startswith("COMPLETED "):
            self.ended = at


class Libtorrent:
    """A libtorrent session in the network, its lookups timed from its DHT traversal log."""

    def __init__(self, router_port: int) -> None:
        settings = ltclient.dht_session_settings(router_port)
        category = lt.alert.category_t
        settings["alert_mask"] = int(
            category.error_notification | category.dht_notification | category.dht_log_notification
        )
        # The traversal log is long; a dropped line would lose a lookup's end.
        settings["alert_queue_size"] = 1_000_000
        # Every node here is 127.0.0.1, so libtorrent's per-IP guard (5 packets a second, then
        # the IP is ignored for 5 minutes) would block the whole network, replies included:
        # shoal likewise counts loopback per address and port. Its DHT upload cap (8 kB/s)
        # drops queries to it; shoal has none.
        settings["dht_block_ratelimit"] = 1_000_000
        settings["dht_upload_rate_limit"] = 100_000_000
        self.session = lt.session(settings)
        self.port = ltclient.listen_port(self.session)
        if self.port == 0:
            raise BenchError("libtorrent could not listen on 127.0.0.1")
        self.bootstrapped = False
        self.table = 0  # nodes in its routing table, as of the last dht_stats_alert
        self.dropped = False
        self.closing = False  # set from the event loop: a waiting thread gives up
        self._busy = threading.Lock()  # held by the thread that waits on the session

    def _alerts(self, timeout_ms: int) -> list[Any]:
        self.session.wait_for_alert(timeout_ms)
        alerts = self.session.pop_alerts()
        for alert in alerts:
            if isinstance(alert, lt.dht_bootstrap_alert):
                self.bootstrapped = True
            elif isinstance(alert, lt.dht_stats_alert):
                self.table = sum(bucket["num_nodes"] for bucket in alert.routing_table)
            elif isinstance(alert, lt.alerts_dropped_alert):
                self.dropped = True
        return alerts

    def wait_joined(self, timeout: float) -> int:
        """Block until the DHT's bootstrap is over and its table holds K nodes; its size."""
        with self._busy:
            return self._wait_joined(timeout)

    def _wait_joined(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closing:
            if self.bootstrapped:
                self.session.post_dht_stats()
            self._alerts(100)
            if self.bootstrapped and self.table >= K:
                return self.table
        raise BenchError(
            f"libtorrent's DHT did not join the shoal nodes within {timeout:.0f} s"
            f" (bootstrapped: {self.bootstrapped}, {self.table} nodes in its table)"
        )

    def node_id(self) -> bytes:
        """libtorrent's DHT node id."""
        return ltclient.dht_node_id(self.session)

    def get_peers(self, target: bytes) -> Traversal | None:
        """Look up target with dht_get_peers and follow its traversal to its end (blocks);
        None if it did not end within LOOKUP_TIMEOUT."""
        with self._busy:
            return self._get_peers(target)

    def _get_peers(self, target: bytes) -> Traversal | None:
        self._alerts(0)  # what libtorrent logged while answering others
        called = time.perf_counter()
        self.session.dht_get_peers(lt.sha1_hash(target))
        wanted = f"NEW target: {target.hex()} "
        number: str | None = None
        traversal: Traversal | None = None
        deadline = time.monotonic() + LOOKUP_TIMEOUT
        while time.monotonic() < deadline and not self.closing:
            for alert in self._alerts(100):
                if not isinstance(alert, lt.dht_log_alert):
                    continue
                if alert.module != lt.dht_module_t.traversal:
                    continue
                parsed = TRAVERSAL_LINE.match(alert.log_message())
                if parsed is None:
                    continue
                if traversal is None:
                    if parsed[2].startswith(wanted):
                        number, traversal = parsed[1], Traversal(alert.timestamp())
                    continue
                if parsed[1] == number:
                    traversal.read(parsed[2], alert.timestamp())
                    if traversal.ended is not None:
                        traversal.seen_after = time.perf_counter() - called
                        return traversal
        return None

    def close(self) -> None:
        """Stop the session (once no thread waits on it) and let it go."""
        self.closing = True
        if self._busy.acquire(timeout=5):
            self._busy.release()
        with contextlib.suppress(RuntimeError):
            self.session.pause()
        del self.session


# -- one network size ---------------------------------------------------------------------------


@dataclass
class Lookup:
    """One timed lookup: what it cost and how close it came."""

    seconds: float
    seen_after: float  # from the call to the bench seeing the end (for shoal: seconds)
    hops: int
    queries: int
    # How many live nodes are closer to the target than the closest one the lookup found
    # (0: it found the closest); None if no node answered.
    closer: int | None
    timed_out: bool


def closer_than(target: bytes, found: bytes | None, live: Sequence[bytes]) -> int | None:
    """How many of the live ids are closer to target than found is (XOR distance)."""
    if found is None:
        return None
    goal = int.from_bytes(target, "big")
    distance = int.from_bytes(found, "big") ^ goal
    return sum(int.from_bytes(i, "big") ^ goal < distance for i in live)


def quantile(values: Sequence[float], share: float) -> float:
    """The value below which share of values lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def summary(lookups: list[Lookup], nodes: int) -> dict[str, Any]:
    """Success rate, hops, messages and milliseconds of one kind of lookup."""
    if not lookups:
        return {"lookups": 0}
    ended = [lookup for lookup in lookups if not lookup.timed_out] or lookups
    ms = [lookup.seconds * 1000 for lookup in ended]
    hops = [lookup.hops for lookup in ended]
    messages = statistics.median(lookup.queries for lookup in ended)
    return {
        "lookups": len(lookups),
        "success": sum(lookup.closer == 0 for lookup in lookups) / len(lookups),
        "timed_out": sum(lookup.timed_out for lookup in lookups),
        "hops_median": statistics.median(hops),
        "hops_p90": quantile(hops, 0.9),
        "messages_median": messages,
        "messages_per_log2_nodes": messages / math.log2(nodes),
        "ms_median": statistics.median(ms),
        "ms_p90": quantile(ms, 0.9),
        "seen_ms_median": statistics.median(lookup.seen_after * 1000 for lookup in ended),
        "misses": [lookup.closer for lookup in lookups if lookup.closer != 0],
        "samples": [asdict(lookup) for lookup in lookups],
    }


async def until(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    """Await condition() (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def timed_shoal(asker: Asker, kind: str, target: bytes, live: list[bytes]) -> Lookup:
    """One lookup of target by the shoal asker; live: the ids it may find."""
    lookup = asker.find_node if kind == SHOAL_FIND_NODE else asker.get_peers
    started = time.perf_counter()
    try:
        done = await asyncio.wait_for(lookup(target), LOOKUP_TIMEOUT + 10)
    except TimeoutError:
        raise BenchError(f"a shoal {kind} lookup never ended (no LookupDone)") from None
    seconds = time.perf_counter() - started
    closest = done.closest[0].id if done.closest else None
    closer = closer_than(target, closest, live)
    return Lookup(seconds, seconds, done.hops, done.queries, closer, done.timed_out)


async def timed_libtorrent(libtorrent: Libtorrent, target: bytes, live: list[bytes]) -> Lookup:
    """One get_peers lookup of target by libtorrent (in a thread: the asker must answer);
    live: the ids it may find."""
    traversal = await asyncio.to_thread(libtorrent.get_peers, target)
    if traversal is None or traversal.ended is None:
        return Lookup(LOOKUP_TIMEOUT, LOOKUP_TIMEOUT, 0, 0, None, True)
    seconds = (traversal.ended - traversal.started).total_seconds()
    hops = traversal.hop.get(traversal.closest or "", 0)
    closest = bytes.fromhex(traversal.closest) if traversal.closest else None
    closer = closer_than(target, closest, live)
    return Lookup(seconds, traversal.seen_after, hops, traversal.queries, closer, False)


async def start_network(pool: Workers, shares: list[int]) -> tuple[list[bytes], list[int]]:
    """Start the workers' nodes, all joining through the first; their ids and ports, the
    first's first."""
    [first] = await pool.ask_all([("start", 1, 0)])
    router = first[0][0]
    shares = [shares[0] - 1, *shares[1:]]
    started = await pool.ask_all([("start", share, router) for share in shares])
    nodes = first + [node for batch in started for node in batch]
    return [i for _port, i in nodes], [port for port, _id in nodes]


def udp_drops(ports: Sequence[int]) -> list[int] | None:
    """Datagrams the kernel dropped at each of these UDP ports, its receive buffer full (from
    Linux's /proc/net/udp); None where that cannot be read."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    drops: dict[int, int] = {}
    for line in lines:
        fields = line.split()
        drops[int(fields[1].rsplit(":", 1)[1], 16)] = int(fields[-1])
    return [drops.get(port, 0) for port in ports]


async def measure(
    asker: Asker, libtorrent: Libtorrent, ids: list[bytes], lookups: int, rng: random.Random
) -> dict[str, list[Lookup]]:
    """lookups of each kind, in rotating order, each of a fresh random target; ids are the
    worker nodes', the ones both askers may find besides each other."""
    assert asker.core is not None
    live_for_libtorrent = [*ids, asker.core.node_id]
    live_for_shoal = [*ids, libtorrent.node_id()]
    results: dict[str, list[Lookup]] = {kind: [] for kind in KINDS}
    for round_number in range(lookups):
        shift = round_number % len(KINDS)
        for kind in KINDS[shift:] + KINDS[:shift]:
            target = rng.randbytes(20)
            if kind == LT_GET_PEERS:
                lookup = await timed_libtorrent(libtorrent, target, live_for_libtorrent)
            else:
                lookup = await timed_shoal(asker, kind, target, live_for_shoal)
            results[kind].append(lookup)
    return results


def ratio(report: dict[str, Any], key: str) -> float | None:
    """shoal's get_peers figure over libtorrent's."""
    shoal, libtorrent = report[SHOAL_GET_PEERS].get(key), report[LT_GET_PEERS].get(key)
    return shoal / libtorrent if shoal and libtorrent else None


async def wait_filled(pool: Workers, asker: RunningNode, nodes: int) -> list[int]:
    """Wait until every table holds K nodes, or until the few that do not (at most
    SHORT_SHARE of them) have stayed as they are for STALLED seconds; the sizes of the tables
    then. Says how far they are every few seconds while that changes."""
    short_before: dict[int, int] = {}
    changed = said = time.monotonic()

    async def filled() -> list[int] | None:
        nonlocal short_before, changed, said
        sizes = [size for batch in await pool.ask_each("tables") for size in batch]
        sizes.append(asker.table_size())
        # By the order the nodes started in: the asker last.
        short = {number: size for number, size in enumerate(sizes) if size < K}
        now = time.monotonic()
        if not short:
            return sizes
        if short != short_before:
            short_before, changed = short, now
            if now - said >= 5:
                said = now
                log(f"{nodes} nodes: {len(short)} tables below {K} nodes: {describe(short)}")
        elif len(short) <= SHORT_SHARE * len(sizes) and now - changed >= STALLED:
            log(
                f"{nodes} nodes: {len(short)} tables stayed below {K} nodes for"
                f" {STALLED:.0f} s: {describe(short)}; the lookups go ahead"
            )
            return sizes
        return None

    return await until(filled, f"every table of {nodes} to hold {K} nodes", fill_timeout(nodes))


def describe(short: dict[int, int]) -> str:
    """A few of the short tables: the node's number in the order they started, its size."""
    shown = ", ".join(f"node {number}: {size}" for number, size in list(short.items())[:8])
    return shown + (", ..." if len(short) > 8 else "")


async def query_counts(pool: Workers, asker: Asker) -> tuple[int, int, int, int]:
    """Queries sent and answered so far by the asker, and by all the workers' nodes."""
    assert asker.core is not None
    counts = await pool.ask_each("counters")
    return (
        asker.core.queries_sent,
        asker.core.queries_answered,
        sum(sent for sent, _answered in counts),
        sum(answered for _sent, answered in counts),
    )


async def run_size(nodes: int, lookups: int, workers: int, rng: random.Random) -> dict[str, Any]:
    """Build a network of nodes shoal nodes plus libtorrent, and time lookups in it."""
    if nodes < K + 2:
        raise BenchError(f"a network needs at least {K + 2} nodes, not {nodes}")
    responders = nodes - 1
    workers = max(1, min(workers, responders))
    shares = [responders // workers + (i < responders % workers) for i in range(workers)]
    log(f"{nodes} nodes: starting {plural(workers, 'worker')}")
    began = time.monotonic()
    pool = Workers(workers)
    asker_node: RunningNode | None = None
    libtorrent: Libtorrent | None = None
    try:
        ids, ports = await start_network(pool, shares)
        router = ports[0]
        asker_node = await start_node([(LOOPBACK, router)], Asker)
        asker = asker_node.service
        assert isinstance(asker, Asker)
        joined = time.monotonic()
        log(f"{nodes} nodes: started in {joined - began:.1f} s; waiting for the tables to fill")
        sizes = await wait_filled(pool, asker_node, nodes)
        filled_at = time.monotonic()
        drops_filled = udp_drops(ports)
        log(f"{nodes} nodes: tables filled in {filled_at - joined:.1f} s; libtorrent joins")
        libtorrent = Libtorrent(router)
        lt_table = await asyncio.to_thread(libtorrent.wait_joined, JOIN_TIMEOUT)
        log(f"{nodes} nodes: {lookups} lookups of each kind")
        before = await query_counts(pool, asker)
        results = await measure(asker, libtorrent, ids, lookups, rng)
        after = await query_counts(pool, asker)
        counts = [later - earlier for earlier, later in zip(before, after, strict=True)]
        drops_end = udp_drops(ports)
        report = {kind: summary(results[kind], nodes) for kind in KINDS}
        return {
            "nodes": nodes,
            "log2_nodes": math.log2(nodes),
            "workers": workers,
            "start_seconds": joined - began,
            "fill_seconds": filled_at - joined,
            "table_min": min(sizes),
            "tables_short": sum(size < K for size in sizes),
            "table_median": statistics.median(sizes),
            "asker_table_after": asker_node.table_size(),
            # Datagrams lost to full receive buffers: at the first node (the only router)
            # by the time the tables filled, and at all the workers' nodes by the end.
            "router_drops": drops_filled[0] if drops_filled else None,
            "drops": sum(drops_end) if drops_end else None,
            "libtorrent_table": lt_table,
            "libtorrent_alerts_dropped": libtorrent.dropped,
            "asker_queries_sent": counts[0],
            "asker_queries_answered": counts[1],
            "others_queries_sent": counts[2],
            "others_queries_answered": counts[3],
            "lookups": report,
            "ratio_ms_get_peers": ratio(report, "ms_median"),
            "ratio_messages_get_peers": ratio(report, "messages_median"),
        }
    finally:
        if libtorrent is not None:
            libtorrent.close()
        if asker_node is not None:
            asker_node.stop()
        await asyncio.to_thread(pool.close)


# -- the report ---------------------------------------------------------------------------------


def print_table(result: dict[str, Any]) -> None:
    """One size's results as a small table."""
    nodes, workers = result["nodes"], plural(result["workers"], "worker")
    print(
        f"\n{nodes} nodes (log2 N = {result['log2_nodes']:.1f}; {workers}): started in"
        f" {result['start_seconds']:.1f} s, tables filled in"
        f" {result['fill_seconds']:.1f} s (min {result['table_min']}, median"
        f" {result['table_median']:.0f} nodes; libtorrent's {result['libtorrent_table']})"
    )
    if result["tables_short"]:
        print(f"{result['tables_short']} shoal tables stayed below {K} nodes")
    if result["router_drops"] is not None:
        print(
            f"datagrams dropped by full receive buffers: {result['router_drops']} at the first"
            f" node (the router) while joining, {result['drops']} at all shoal nodes by the end"
        )
    columns = (
        ("lookup", 20),
        ("n", 3),
        ("success", 7),
        ("hops", 4),
        ("p90", 3),
        ("msgs", 5),
        ("msgs/log2N", 10),
        ("ms", 7),
        ("p90 ms", 7),
        ("timeouts", 8),
    )
    print(f"{columns[0][0]:<{columns[0][1]}} " + " ".join(f"{n:>{w}}" for n, w in columns[1:]))
    for kind in KINDS:
        row = result["lookups"][kind]
        if not row["lookups"]:
            continue
        print(
            f"{kind:<20} {row['lookups']:>3} {row['success']:>7.2f} {row['hops_median']:>4.0f}"
            f" {row['hops_p90']:>3.0f} {row['messages_median']:>5.0f}"
            f" {row['messages_per_log2_nodes']:>10.2f} {row['ms_median']:>7.1f}"
            f" {row['ms_p90']:>7.1f} {row['timed_out']:>8}"
        )
    ms, messages = result["ratio_ms_get_peers"], result["ratio_messages_get_peers"]
    if ms is not None and messages is not None:
        print(f"shoal/libtorrent get_peers: time {ms:.2f}x, messages {messages:.2f}x")
    seen = result["lookups"][LT_GET_PEERS].get("seen_ms_median")
    if seen is not None:
        print(f"libtorrent from the call to the bench reading COMPLETED: median {seen:.1f} ms")
    for kind in KINDS:
        misses = result["lookups"][kind].get("misses")
        if misses:
            print(f"{kind} misses (live nodes closer than the closest it found): {misses}")
    print(
        f"during the lookups the shoal asker sent {result['asker_queries_sent']} queries"
        f" ({result['asker_queries_answered']} answered), the other shoal nodes"
        f" {result['others_queries_sent']} ({result['others_queries_answered']} answered);"
        f" the asker's table grew to {result['asker_table_after']} nodes",
        flush=True,
    )


def plural(count: int, what: str) -> str:
    """count worker processes, say."""
    return f"{count} {what} process{'es' if count != 1 else ''}"


def default_workers(nodes: int) -> int:
    """Worker processes for a network of nodes: one per NODES_PER_WORKER, at most the cores."""
    return max(1, min(os.cpu_count() or 1, math.ceil(nodes / NODES_PER_WORKER)))


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size, in order; each table is printed as soon as it is known."""
    rng = random.Random(args.seed)
    results = []
    for nodes in args.nodes:
        workers = args.workers or default_workers(nodes)
        result = await run_size(nodes, args.lookups, workers, rng)
        results.append(result)
        if not args.json:
            print_table(result)
    return results


def main() -> int:
    """Parse the options, run every size, print the tables (or JSON)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nodes", type=int, action="append", help="network size (repeat for several)"
    )
    parser.add_argument("--lookups", type=int, default=50, help="lookups of each kind per size")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: by size)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the lookup targets")
    parser.add_argument("--quick", action="store_true", help="one network of 100 nodes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.nodes is None:
        args.nodes = [100] if args.quick else list(DEFAULT_NODES)
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    # A kill stops the bench as Ctrl-C does: workers, asker and libtorrent shut down first.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = asyncio.run(run(args))
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"bench failed: {error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"sizes": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
