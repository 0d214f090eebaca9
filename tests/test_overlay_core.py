"""The overlay core alone, fed bytes as a neighbour would send them: the handshake, the roles,
queries answered, forwarded and dropped, and a neighbour that misbehaves."""

from __future__ import annotations

import random
import weakref

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.overlay import links as overlay
from shoal.overlay.core import Close, Dial, OverlayNode, Send
from shoal.overlay.messages import (
    GREETING,
    Framer,
    Hello,
    Message,
    Ping,
    Pong,
    QrpTable,
    Query,
    QueryHit,
    QueryStatus,
    Result,
    Role,
    encode,
)
from shoal.overlay.routing import SEEN_CAPACITY, QueryRouteTable
from shoal.overlay.search import MAX_FLOOD_TTL, Strategy, hash_query

ISO = Result(bytes(range(20)), 4096, "Debian 12 netinst.iso")


def node(role: Role = Role.ULTRAPEER, seed: int = 1) -> OverlayNode:
    return OverlayNode(random.Random(seed).randbytes(20), 6881, role, random.Random(seed))


def message(payload, *, ttl: int = 1, hops: int = 0, ident: bytes | None = None) -> bytes:
    return encode(Message(ident or random.randbytes(16), ttl, hops, payload))


class Neighbour:
    """A link into a core, driven by hand: what it writes, and what the core writes back."""

    def __init__(
        self,
        core: OverlayNode,
        ip: str,
        role: Role = Role.ULTRAPEER,
        now: float = 0.0,
        node_id: bytes | None = None,
        hello: bool = True,
    ) -> None:
        self.core = core
        self.framer = Framer()
        link = core.accept((ip, 40000), now)
        assert link is not None
        self.link = link
        self.node_id = node_id or random.randbytes(20)
        self.said: list[Message] = []
        self.unread: list[Message] = []
        self.closed: str | None = None
        NEIGHBOURS.setdefault(core, {})[link] = self
        greeting = GREETING + (message(Hello(self.node_id, 6881, role)) if hello else b"")
        self.send(greeting, now)

    def send(self, data: bytes, now: float = 0.0) -> list[Message]:
        """Feed data to the core; the messages the core wrote on this link since."""
        self.core.receive(self.link, data, now)
        return self.heard()

    def heard(self) -> list[Message]:
        """What the core wrote on this link since the last call."""
        neighbours = NEIGHBOURS[self.core]
        for output in self.core.take_outputs():
            if isinstance(output, Send) and output.link in neighbours:
                to = neighbours[output.link]
                new = to.framer.feed(output.data)
                to.said += new
                to.unread += new
            elif isinstance(output, Close) and output.link in neighbours:
                neighbours[output.link].closed = output.reason
        new, self.unread = self.unread, []
        return new


# Each core's hand-driven links, by link number.
NEIGHBOURS: weakref.WeakKeyDictionary[OverlayNode, dict[int, Neighbour]] = (
    weakref.WeakKeyDictionary()
)


def kinds(messages: list[Message]) -> list[type]:
    return [type(m.payload) for m in messages]


def test_a_link_opens_with_hellos_and_the_core_answers_pings_with_ultrapeers():
    core = node()
    first = Neighbour(core, "10.0.0.1")
    assert isinstance(first.said[0].payload, Hello)
    assert first.said[0].payload.node_id == core.node_id
    second = Neighbour(core, "10.0.0.2")
    assert second.send(message(Ping(), ttl=1)) == []  # a keep-alive: no pong
    pongs = [m.payload for m in second.send(message(Ping(), ttl=2)) if isinstance(m.payload, Pong)]
    assert pongs and ("10.0.0.1", 6881) in pongs[0].addresses
    assert len(core.links()) == 2


def test_a_second_link_from_the_same_node_and_a_link_to_ourselves_are_refused():
    core = node()
    first = Neighbour(core, "10.0.0.1")
    again = Neighbour(core, "10.0.0.9", node_id=first.node_id)
    assert again.closed == "already linked"
    mirror = Neighbour(core, "10.0.0.8", node_id=core.node_id)
    assert mirror.closed == "a link to ourselves"
    assert len(core.links()) == 1


def test_a_leaf_refuses_leaves_and_an_ultrapeer_refuses_ultrapeers_beyond_its_maximum():
    leaf = node(Role.LEAF)
    assert Neighbour(leaf, "10.0.0.1", Role.LEAF).closed == "a leaf links to ultrapeers only"
    ultrapeer = node()
    for number in range(overlay.MAX_DEGREE):
        assert Neighbour(ultrapeer, f"10.0.1.{number}").closed is None
    refused = Neighbour(ultrapeer, "10.0.2.1")
    assert refused.closed == "no room for another ultrapeer"
    # Told where else to go, as Gnutella's X-Try-Ultrapeers did.
    assert Pong in kinds(refused.said)


def test_a_query_is_answered_forwarded_once_and_its_hit_goes_back_the_way_it_came():
    core = node()
    core.set_listings([ISO])
    asker, other, third = (Neighbour(core, f"10.0.0.{n}") for n in (1, 2, 3))
    query_id = bytes(16)
    answers = asker.send(message(Query("debian netinst"), ttl=3, ident=query_id))
    hits = [m for m in answers if isinstance(m.payload, QueryHit)]
    assert len(hits) == 1 and hits[0].id == query_id
    assert hits[0].payload.results == (ISO,)
    forwarded = [m for m in other.heard() if isinstance(m.payload, Query)]
    assert [(m.ttl, m.hops) for m in forwarded] == [(2, 1)]
    # The same query again, by another neighbour: neither answered nor forwarded.
    assert other.send(message(Query("debian netinst"), ttl=3, ident=query_id)) == []
    assert core.counters.duplicates == 1
    # A hit from a third neighbour for it goes back to the asker only.
    far = QueryHit(("0.0.0.0", 7000), random.randbytes(20), (ISO,))
    third.send(message(far, ident=query_id))
    back = [m for m in asker.heard() if isinstance(m.payload, QueryHit)]
    # The first hop fills in the holder's IP, which the holder cannot know.
    assert [m.payload.holder for m in back] == [("10.0.0.3", 7000)]
    assert not [m for m in other.heard() if isinstance(m.payload, QueryHit)]


def test_a_hit_for_a_query_never_routed_here_is_dropped():
    core = node()
    first, second = Neighbour(core, "10.0.0.1"), Neighbour(core, "10.0.0.2")
    first.send(message(QueryHit(("10.0.0.7", 1), random.randbytes(20), (ISO,))))
    assert not [m for m in second.heard() if isinstance(m.payload, QueryHit)]


def test_a_huge_ttl_is_capped():
    core = node()
    asker, other = Neighbour(core, "10.0.0.1"), Neighbour(core, "10.0.0.2")
    asker.send(message(Query("anything"), ttl=255, hops=1))
    forwarded = [m for m in other.heard() if isinstance(m.payload, Query)]
    assert [m.ttl + m.hops for m in forwarded] == [MAX_FLOOD_TTL]
    asker.send(message(Query("at the cap"), ttl=3, hops=MAX_FLOOD_TTL))
    assert not [m for m in other.heard() if isinstance(m.payload, Query)]


def test_a_neighbour_that_floods_queries_is_rate_limited_then_dropped_and_banned():
    core = node()
    flooder, other = Neighbour(core, "10.0.0.66"), Neighbour(core, "10.0.0.2")
    sent = 0
    while flooder.closed is None and sent < 10_000:
        flooder.send(message(Query(f"spam {sent}"), ttl=2), now=1.0)
        sent += 1
    forwarded = [m for m in other.heard() if isinstance(m.payload, Query)]
    assert len(forwarded) <= overlay.QUERY_BURST
    assert flooder.closed == "too many queries"
    assert core.accept(("10.0.0.66", 40002), 2.0) is None  # banned
    assert len(core.seen) <= SEEN_CAPACITY
    # The other neighbour's queries still go through.
    other.send(message(Query("fair"), ttl=2), now=2.0)
    assert core.counters.queries_received == sent + 1


def test_malformed_bytes_drop_the_link_and_ban_its_ip():
    core = node()
    bad = Neighbour(core, "10.0.0.13")
    bad.send(b"\x00" * 16 + bytes([0x80, 3, 0]) + (2**31).to_bytes(4, "big"))
    assert bad.closed is not None and bad.closed.startswith("malformed")
    assert core.accept(("10.0.0.13", 1), 0.0) is None
    quiet = Neighbour(core, "10.0.0.14", hello=False)
    quiet.send(message(Ping()))
    assert quiet.closed == "spoke before hello"


def test_a_leaf_sends_its_routing_table_and_is_asked_only_what_it_may_hold():
    ultrapeer = node()
    leaf = Neighbour(ultrapeer, "10.0.0.5", Role.LEAF)
    asker = Neighbour(ultrapeer, "10.0.0.1")
    table = QueryRouteTable.of([ISO.name])
    table.add(hash_query(ISO.info_hash))
    leaf.send(message(QrpTable(table.to_bytes())))
    asker.send(message(Query("debian"), ttl=3))
    asker.send(message(Query("ubuntu"), ttl=3))
    asker.send(message(Query(hash_query(ISO.info_hash)), ttl=3))
    asked = [m.payload.words for m in leaf.heard() if isinstance(m.payload, Query)]
    assert asked == ["debian", hash_query(ISO.info_hash)]


def test_a_routing_table_from_an_ultrapeer_is_refused():
    core = node()
    peer = Neighbour(core, "10.0.0.5")
    peer.send(message(QrpTable(QueryRouteTable.of(["x"]).to_bytes())))
    assert peer.closed is not None


def test_a_hash_query_finds_the_holder_of_that_torrent_only():
    core = node()
    core.set_listings([ISO, Result(bytes(20), 1, "other")])
    asker = Neighbour(core, "10.0.0.1")
    hits = [
        m.payload
        for m in asker.send(message(Query(hash_query(ISO.info_hash))))
        if isinstance(m.payload, QueryHit)
    ]
    assert [hit.results for hit in hits] == [(ISO,)]


def test_a_node_dials_hosts_it_heard_of_until_its_degree_and_backs_off_failures():
    core = node()
    core.add_hosts([(f"10.1.0.{n}", 6881) for n in range(20)], 0.0)
    core.handle_timer(0.0)
    dials = [o for o in core.take_outputs() if isinstance(o, Dial)]
    assert len(dials) == overlay.TARGET_DEGREE
    for dial in dials:
        core.dial_failed(dial.link, 0.5)
    core.handle_timer(overlay.MAINTAIN_EVERY)
    again = {o.address for o in core.take_outputs() if isinstance(o, Dial)}
    assert len(again) == overlay.TARGET_DEGREE and not again & {d.address for d in dials}


def test_walkers_park_and_go_on_only_while_the_origin_wants_more():
    origin = node(seed=2)
    hop = Neighbour(origin, "10.0.0.1")
    search = origin.search("rare words", Strategy.WALK, 0.0, walkers=1, wanted=1)
    walker = [m for m in hop.heard() if isinstance(m.payload, Query)]
    assert len(walker) == 1 and walker[0].payload.walk and walker[0].id == search
    # The walker's node asks after 4 hops: the origin says go on, then, once it has a
    # result, stop.
    answer = hop.send(message(QueryStatus(0, False), ident=search, hops=4))
    assert [m.payload for m in answer] == [QueryStatus(0, False)]
    hop.send(message(QueryHit(("0.0.0.0", 1), bytes(20), (ISO,)), ident=search))
    answer = hop.send(message(QueryStatus(0, False), ident=search, hops=8))
    assert [m.payload for m in answer] == [QueryStatus(1, True)]


def test_pongs_nobody_asked_for_do_not_fill_the_host_cache():
    core = node()
    peer = Neighbour(core, "10.0.0.1")
    before = len(core.hosts)
    for block in range(20):
        fake = tuple((f"10.9.{block}.{n}", 6881) for n in range(16))
        peer.send(message(Pong(fake)))
    # One pong is taken per ping the core sent (an inbound link is owed no refusal's).
    pings = sum(isinstance(m.payload, Ping) for m in peer.said)
    assert pings <= 1 and len(core.hosts) - before <= 16 * pings


def test_a_routed_hit_claiming_255_hops_is_dropped_not_a_crash():
    core = node()
    asker, far = Neighbour(core, "10.0.0.1"), Neighbour(core, "10.0.0.2")
    query_id = bytes(range(16))
    asker.send(message(Query("anything"), ttl=3, ident=query_id))
    hit = QueryHit(("10.0.0.2", 7), bytes(20), (ISO,))
    far.send(message(hit, ident=query_id, hops=255))
    far.send(message(QueryStatus(0, False), ident=query_id, hops=255))
    assert asker.heard() == [] and far.closed is None


def test_one_ip_holds_a_few_links_at_most():
    core = node()
    held = [core.accept(("192.0.2.7", 40000 + n), 0.0) for n in range(overlay.LINKS_PER_IP + 2)]
    assert sum(link is not None for link in held) == overlay.LINKS_PER_IP
    assert core.accept(("192.0.2.8", 40000), 0.0) is not None


def test_a_relay_a_little_over_the_query_rate_is_limited_but_kept():
    core = node()
    relay = Neighbour(core, "10.0.0.3")
    now = 1.0
    for number in range(5000):  # 25 a second for 200 s, against a rate of 20
        now += 1 / 25
        relay.send(message(Query(f"honest {number}"), ttl=1), now=now)
    assert relay.closed is None and core.counters.rate_dropped > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_bytes_from_a_neighbour_leave_the_core_sound(chunks):
    core = node()
    core.set_listings([ISO])
    other = Neighbour(core, "10.0.0.2")
    peer = Neighbour(core, "10.0.0.1")
    for chunk in chunks:
        peer.send(chunk, now=1.0)
    other.send(message(Query("debian"), ttl=2), now=2.0)
    core.handle_timer(3.0)
    assert other.closed is None
    assert [m for m in other.heard() + other.said if isinstance(m.payload, QueryHit)]
    assert len(core.links()) <= 2


def test_a_dynamic_query_with_few_links_widens_them_with_more_ttl():
    core = node()
    first, second = Neighbour(core, "10.0.0.1"), Neighbour(core, "10.0.0.2")
    core.search("rare words", Strategy.DYNAMIC, 0.0, wanted=1)
    probes = [m.ttl for n in (first, second) for m in n.heard() if isinstance(m.payload, Query)]
    assert probes == [2, 2]
    now = 0.0
    while (timer := core.get_timer()) is not None and timer < 60.0:
        now = timer
        core.handle_timer(now)
    widened = [m.ttl for n in (first, second) for m in n.heard() if isinstance(m.payload, Query)]
    assert sorted(widened) == [3, 3, 4, 4]


def test_a_copy_of_a_query_with_more_ttl_goes_further_but_is_not_answered_again():
    core = node()
    core.set_listings([ISO])
    asker, other = Neighbour(core, "10.0.0.1"), Neighbour(core, "10.0.0.2")
    query_id = bytes(range(16))
    answered = asker.send(message(Query("debian"), ttl=1, ident=query_id))
    assert [type(m.payload) for m in answered] == [QueryHit]
    assert other.heard() == []  # TTL 1: answered, not forwarded
    again = asker.send(message(Query("debian"), ttl=3, ident=query_id))
    assert again == []  # not answered twice
    assert [(m.ttl, m.hops) for m in other.heard()] == [(2, 1)]
    asker.send(message(Query("debian"), ttl=2, ident=query_id))
    assert other.heard() == [] and core.counters.duplicates == 1
