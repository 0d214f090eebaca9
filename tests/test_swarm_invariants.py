"""The swarm's and the picker's invariants hold whatever peers do, in any order (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from test_swarm_hostile import PIECE, Remote, actions, leecher, requests

from shoal.metainfo import create_torrent
from shoal.swarm import core
from shoal.wire import messages as m

CONTENT = random.Random(11).randbytes(6 * PIECE)

steps = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "join",
                "have_all",
                "have",
                "bitfield",
                "unchoke",
                "choke",
                "answer",
                "reject",
                "leave",
                "tick",
            ]
        ),
        st.integers(0, 3),
        st.integers(0, 5),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_bookkeeping_holds_after_every_step(tmp_path_factory, operations):
    path = tmp_path_factory.mktemp("inv") / "content.bin"
    path.write_bytes(CONTENT)
    torrent = create_torrent(path, piece_length=PIECE)
    swarm = leecher(torrent, torrent.info_hash)
    remotes: dict[int, Remote] = {}
    asked: dict[int, list[m.Request]] = {}
    now = 0.0
    # A peer that has everything and unchokes us at once: requests flow from the start.
    opening = [("join", 0, 0), ("have_all", 0, 0), ("unchoke", 0, 0)]
    for operation, who, piece in opening + operations:
        now += 0.7
        remote = remotes.get(who)
        if operation == "join" and remote is None:
            remotes[who] = Remote(swarm, who + 1, now)
        elif remote is None or not remote.connected:
            continue
        elif operation == "have_all":
            remote.send(m.frame(m.HAVE_ALL), now)
        elif operation == "have":
            remote.send(m.frame_index(m.HAVE, piece), now)
        elif operation == "bitfield":
            remote.send(m.frame(m.BITFIELD, bytes([0b10101000])), now)
        elif operation in ("unchoke", "choke"):
            remote.send(m.frame(m.UNCHOKE if operation == "unchoke" else m.CHOKE), now)
        elif operation in ("answer", "reject") and asked.get(who):
            request = asked[who].pop(0)
            if operation == "answer":
                start = request.index * PIECE + request.begin
                block = CONTENT[start : start + request.length]
                remote.send(m.piece_header(request.index, request.begin, request.length) + block)
            else:
                ref = (request.index, request.begin, request.length)
                remote.send(m.frame_block_ref(m.REJECT_REQUEST, *ref), now)
        elif operation == "leave":
            swarm.remove_peer(remote.key, now)
        elif operation == "tick":
            swarm.handle_timer(now)
        if remote is not None and remote.connected:
            asked.setdefault(who, []).extend(requests(remote.received()))
        for action in actions(swarm):
            if isinstance(action, core.VerifyPiece):
                swarm.piece_checked(action.index, True, now)
        swarm.check_invariants()
