"""Query routing tables and the seen-query cache of the overlay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.overlay.messages import QRP_BYTES
from shoal.overlay.routing import QueryRouteTable, SeenIds
from shoal.words import words

NAMES = ["Alpine Sunrise Timelapse.webm", "holiday beach 2024.jpg", "Bach - Cello Suite 1.flac"]


def test_a_table_passes_what_its_names_match_and_stops_most_others():
    table = QueryRouteTable.of(NAMES)
    for query in ("alpine timelap", "sunrise", "beach holi", "cello suite", "bach 1"):
        assert table.may_match(query)
    stopped = [
        q
        for q in ("volcano", "mountain dawn", "jazz piano", "beach volley")
        if not table.may_match(q)
    ]
    assert len(stopped) == 4
    assert table.fill() < 0.01


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8), st.data())
def test_no_name_a_query_matches_is_ever_filtered_out(names, data):
    table = QueryRouteTable.of(names)
    name = data.draw(st.sampled_from(names))
    have = words(name)
    if not have:
        return
    # Any query made of the name's words, the last one cut to a prefix, matches it.
    chosen = data.draw(st.lists(st.sampled_from(have), min_size=1, max_size=3))
    cut = data.draw(st.integers(1, len(chosen[-1])))
    query = " ".join([*chosen[:-1], chosen[-1][:cut]])
    assert table.may_match(query)


def test_a_table_round_trips_and_a_wrong_size_is_refused():
    table = QueryRouteTable.of(NAMES)
    assert QueryRouteTable(table.to_bytes()).may_match("alpine") is True
    with pytest.raises(ValueError):
        QueryRouteTable(bytes(QRP_BYTES - 1))


def test_each_id_is_new_once_until_it_expires_and_the_cache_stays_bounded():
    seen = SeenIds(capacity=100, lifetime=60.0)
    assert seen.first_time(b"a" * 16, 0.0)
    assert not seen.first_time(b"a" * 16, 30.0)
    assert seen.first_time(b"a" * 16, 61.0)  # forgotten after its lifetime
    for number in range(1000):
        seen.first_time(number.to_bytes(16, "big"), 62.0)
        assert len(seen) <= 100
