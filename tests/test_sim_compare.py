"""The three architectures side by side: one population, the same listings and queries."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import shoal_json

from shoal.sim.compare import run_compare
from shoal.sim.compare_report import ARCHITECTURES

NODES = 200
QUERIES = 10


def _still(seed: int) -> dict[str, Any]:
    """No churn, each listing on 5% of the nodes; searches satisfied by one result (as Lv
    et al. measured walks against floods)."""
    report = run_compare(NODES, 0.0, 0.05, QUERIES, seed, wanted=1, phase=60.0)
    return report.as_dict()


@pytest.fixture(scope="module")
def runs() -> tuple[dict[str, Any], dict[str, Any]]:
    """Two runs of the same seed."""
    return _still(3), _still(3)


def test_a_run_is_the_same_for_the_same_seed(runs):
    first, second = runs
    assert first["wall_seconds"] > 0
    for report in (first, second):
        del report["wall_seconds"]
    assert first == second


def test_every_architecture_finds_replicated_content_without_churn(runs):
    report = runs[0]
    assert set(report["architectures"]) == set(ARCHITECTURES)
    assert report["holders"] == 10 and report["departed"] == 0
    for name, figures in report["architectures"].items():
        assert figures["searches"] == figures["completed"] == QUERIES, name
        assert figures["success_rate"] == 1.0, name
        assert 1 <= figures["holders_found"] <= figures["holders_alive"] == 10, name
        assert figures["stale_results"] == 0, name
        assert 0 < figures["first_result_seconds"]["median"] < 5, name


def test_flooding_costs_more_messages_than_walks_and_dynamic_querying(runs):
    figures = runs[0]["architectures"]
    flood = figures["flood"]["messages_per_query"]["mean"]
    assert flood > figures["walk"]["messages_per_query"]["mean"]
    assert flood > figures["dynamic"]["messages_per_query"]["mean"]
    # A flood with TTL 4 reaches nearly every node of 200, each over several links.
    assert flood > NODES


def test_the_hub_handles_every_query_and_the_dht_few_hops(runs):
    figures = runs[0]["architectures"]
    hub = figures["hub"]
    assert hub["messages_per_query"]["mean"] == 2  # a request and its reply
    assert hub["busiest_node_messages"] == 2 * QUERIES
    assert hub["busiest_node_share"] == 1.0
    for name in ("dht", "flood", "walk", "dynamic"):
        assert figures[name]["busiest_node_share"] < 0.5, name
    dht = figures["dht"]
    assert dht["hops"]["median"] <= math.ceil(math.log2(NODES) / 3) + 2
    assert dht["messages_per_query"]["median"] < 8 * math.log2(NODES)


def test_another_seed_gives_another_run(runs):
    other = run_compare(60, 0.0, 0.05, 2, seed=4, phase=10.0).as_dict()
    assert other["dht_datagrams"] != runs[0]["dht_datagrams"]


def test_under_churn_the_hub_names_departed_holders_and_the_overlay_does_not():
    report = run_compare(100, 20.0, 0.1, 6, seed=2, phase=60.0).as_dict()
    figures = report["architectures"]
    assert report["departed"] > 0
    # Listings of nodes gone within the last hour stay on the hub until they expire.
    assert figures["hub"]["stale_results"] > 0
    assert figures["hub"]["success_rate"] == 1.0
    for name in ("flood", "walk", "dynamic"):
        assert figures[name]["stale_results"] == 0, name


def test_with_leaves_only_ultrapeers_forward_and_leaves_are_still_found(runs):
    report = run_compare(NODES, 0.0, 0.05, QUERIES, 3, wanted=1, leaves=0.7, phase=60.0)
    figures = report.as_dict()["architectures"]
    flat = runs[0]["architectures"]
    for name in ("flood", "walk", "dynamic"):
        assert figures[name]["success_rate"] == 1.0, name
    # 60 ultrapeers carry the flood instead of 200.
    assert (
        figures["flood"]["messages_per_query"]["mean"]
        < flat["flood"]["messages_per_query"]["mean"] / 2
    )


@pytest.mark.parametrize(
    ("nodes", "churn", "replication", "queries"),
    [(1, 0.0, 0.1, 1), (10, -1.0, 0.1, 1), (10, 0.0, 0.0, 1), (10, 0.0, 0.1, 0)],
)
def test_nonsense_is_refused(nodes, churn, replication, queries):
    with pytest.raises(ValueError):
        run_compare(nodes, churn, replication, queries)


def test_sim_compare_prints_one_json_object():
    report = shoal_json(
        "sim", "compare", "--nodes", "40", "--queries", "2", "--replication", "0.1", "--json"
    )
    assert set(report["architectures"]) == set(ARCHITECTURES)
    assert report["nodes"] == 40 and report["holders"] == 4 and report["wanted"] == 20
    assert report["leaves"] == 0
    assert report["architectures"]["hub"]["searches"] == 2
