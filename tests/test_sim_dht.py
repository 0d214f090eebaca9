"""The DHT scenario: deterministic for a seed, and lookups that find the closest live node."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import shoal_json

from shoal.sim.dht import run_dht

NODES = 200


@pytest.fixture(scope="module", params=[0.0, 0.2], ids=["still", "churn"])
def runs(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two runs of the same seed."""
    first, second = (run_dht(NODES, churn=request.param, seed=5).as_dict() for _ in range(2))
    return first, second


def test_a_run_is_the_same_for_the_same_seed(runs):
    first, second = runs
    for report in (first, second):
        del report["wall_seconds"]
    assert first == second


def test_lookups_find_the_closest_live_node_in_few_hops(runs):
    report = runs[0]
    assert report["departed"] == round(report["churn"] * NODES)
    assert report["completed"] >= 95 and report["timed_out"] == 0
    assert report["success_rate"] >= 0.95
    assert report["hops"]["median"] <= math.ceil(math.log2(NODES) / 3) + 2
    assert report["messages_per_lookup"]["median"] < 4 * math.log2(NODES)


def test_another_seed_gives_another_run():
    one, other = (run_dht(NODES, lookups=20, seed=seed).as_dict() for seed in (1, 2))
    assert one["datagrams"] != other["datagrams"]


@pytest.mark.parametrize(("nodes", "churn"), [(1, 0.0), (10, 1.5), (10, -0.1)])
def test_nonsense_is_refused(nodes, churn):
    with pytest.raises(ValueError):
        run_dht(nodes, churn=churn)


def test_sim_dht_prints_one_json_object():
    report = shoal_json("sim", "dht", "--nodes", "40", "--lookups", "5", "--json")
    assert {"success_rate", "hops", "messages_per_lookup", "latency_seconds"} <= set(report)
    assert report["completed"] == 5
