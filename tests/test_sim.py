"""The simulator kernel and its swarm scenario: ordering, determinism, churn, bounds held."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import SHOAL

from shoal.sim.kernel import EventQueue, Link
from shoal.sim.scenario import run_swarm
from shoal.swarm.core import SwarmConfig

MiB = 1024 * 1024


def test_events_run_in_time_order_and_ties_in_queue_order():
    queue = EventQueue()
    ran: list[str] = []
    queue.at(2.0, lambda: ran.append("late"))
    queue.at(1.0, lambda: ran.append("first"))
    queue.at(1.0, lambda: ran.append("second"))
    queue.at(1.0, lambda: queue.at(0.5, lambda: ran.append("past, so now")))
    queue.run(until=10.0, done=lambda: False)
    assert ran == ["first", "second", "past, so now", "late"]
    assert queue.processed == 5 and queue.now == 10.0


def test_an_uplink_sends_in_order_at_its_bandwidth():
    link = Link(latency=0.1, bandwidth=1000.0)
    assert link.send(500, now=0.0) == pytest.approx(0.6)
    assert link.send(500, now=0.0) == pytest.approx(1.1)  # waits for the first
    assert link.send(100, now=5.0) == pytest.approx(5.2)  # idle link: leaves at once


def test_a_swarm_run_is_the_same_for_the_same_seed():
    first = run_swarm(12, MiB, seed=7).as_dict()
    second = run_swarm(12, MiB, seed=7).as_dict()
    for report in (first, second):
        del report["wall_seconds"]
    assert first == second
    assert first["completed"] == 11 and first["unfinished"] == 0


def test_every_leecher_completes_and_no_node_exceeds_its_peer_limit():
    report = run_swarm(161, MiB, seed=3)
    assert report.completed == 160
    # Peer exchange once connected every node to every other, limit or not.
    assert report.peak_connections <= SwarmConfig().max_peers


def test_with_churn_leechers_leave_and_the_run_still_ends():
    report = run_swarm(30, 2 * MiB, churn=0.2, seed=5)
    assert report.departed > 0
    assert report.unfinished == 0
    assert report.completed + report.departed >= 29


def test_sim_swarm_prints_one_json_object():
    result = subprocess.run(
        [str(SHOAL), "sim", "swarm", "--nodes", "8", "--size-mib", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {
        "nodes",
        "simulated_seconds",
        "wall_seconds",
        "events",
        "bytes_moved",
        "completion_seconds",
    } <= set(report)
    assert report["completed"] == 7
