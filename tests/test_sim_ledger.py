"""The ledger simulator: 100 real ledger cores with 100 ms links fork more often as blocks come
faster, every node ends on one tip, and a run is the same for the same seed."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from conftest import shoal_json

from shoal.cli.common import main
from shoal.sim.ledger import LedgerNetwork, LedgerRun, default_tick, run_ledger, simulate

NODES = 100
SHORT, LONG = 0.5, 60.0  # seconds between blocks; a block takes about a second to spread


def simulated(
    block_time: float, blocks: int, nodes: int = NODES, **options: Any
) -> tuple[LedgerNetwork, LedgerRun]:
    net = LedgerNetwork(nodes, block_time=block_time, tick=default_tick(block_time), **options)
    return net, simulate(net, blocks)


@pytest.fixture(scope="module")
def short() -> tuple[LedgerNetwork, LedgerRun]:
    return simulated(SHORT, 100, seed=3)


@pytest.fixture(scope="module")
def long() -> tuple[LedgerNetwork, LedgerRun]:
    return simulated(LONG, 25, seed=3)


def test_the_fork_rate_rises_as_the_block_time_falls(short, long):
    fast, slow = short[1], long[1]
    assert fast.fork_rate >= 0.4 and slow.fork_rate <= 0.1
    assert fast.stale == fast.blocks - fast.in_best_chain > 0
    assert fast.max_reorg_depth >= 2 and slow.max_reorg_depth <= 1
    # A block spreads at the same pace whatever the block time: a few hops of five
    # one-way latencies each (inv, getheaders, headers, getdata, block).
    for run in (fast, slow):
        assert 0.5 < run.propagation_seconds["p50"] < run.propagation_seconds["p90"] < 3.0


@pytest.mark.parametrize("which", ["short", "long"])
def test_every_node_ends_on_the_tip_of_the_best_chain(which, request):
    net, run = request.getfixturevalue(which)
    assert run.converged and not run.links_closed
    assert len({host.chain.tip.hash for host in net.hosts}) == 1
    best = net.hosts[0].chain.tip
    # Every block past the genesis was mined in the run: the best chain holds exactly those
    # counted in it, and each was on every node's active chain by the end.
    assert best.height == run.in_best_chain
    for block_hash, mined in net.mined.items():
        index = net.hosts[0].chain.get(block_hash)
        if index is not None and net.hosts[0].chain.contains(index):
            assert len(mined.reached) == NODES


def test_a_run_is_the_same_for_the_same_seed_and_another_for_another():
    first, second, other = (
        run_ledger(20, [0.5, 2.0], 20, seed=seed).as_dict() for seed in (7, 7, 8)
    )
    for report in (first, second, other):
        for run in report["runs"]:
            del run["wall_seconds"]
    assert first == second
    assert first != other


def test_a_delay_on_every_block_slows_its_spread_and_forks_more():
    plain, delayed = (
        simulated(2.0, 60, nodes=30, seed=5, block_delay=delay)[1] for delay in (0.0, 0.5)
    )
    # Each hop holds a block up for the delay: a few hops to reach half the nodes.
    assert delayed.propagation_seconds["p50"] >= plain.propagation_seconds["p50"] + 0.5
    assert delayed.fork_rate > plain.fork_rate
    assert delayed.converged and plain.converged


def test_a_miner_with_all_the_hash_power_finds_every_block_and_none_goes_stale():
    net, run = simulated(0.5, 40, nodes=10, shares=[1.0] + [0.0] * 9, seed=2)
    assert {mined.finder for mined in net.mined.values()} == {0}
    assert run.stale == 0 and run.in_best_chain == 40 and not run.reorgs


def test_sim_ledger_prints_a_row_per_block_time_and_json():
    args = ["sim", "ledger", "--nodes", "12", "--block-times", "5,0.5", "--blocks", "20"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:4]]
    assert [row[0] for row in rows] == ["5", "0.5"]
    assert all(int(row[1]) >= 20 for row in rows)
    report = shoal_json(*args, "--seed", "4", "--json")
    assert report["nodes"] == 12 and [r["block_time"] for r in report["runs"]] == [5.0, 0.5]
    assert all(r["converged"] and r["blocks"] >= 20 for r in report["runs"])


@pytest.mark.parametrize("times", ["1,x", "0,1", "nan", "inf", ",".join(["1"] * 21)])
def test_sim_ledger_refuses_block_times_out_of_range(times):
    result = CliRunner().invoke(main, ["sim", "ledger", "--block-times", times])
    assert result.exit_code == 2 and "--block-times" in result.output


@pytest.mark.parametrize(
    "nodes, options",
    [
        (1, {"block_time": 1.0}),
        (5, {"block_time": 0.0}),
        (5, {"block_time": float("nan")}),
        (5, {"block_time": 1.0, "outbound": 5}),
        (3, {"block_time": 1.0, "shares": [1.0, 1.0]}),
        (3, {"block_time": 1.0, "shares": [1.0, float("nan"), 1.0]}),
        (3, {"block_time": 1.0, "shares": [0.0, 0.0, 0.0]}),
        (3, {"block_time": 1.0, "tick": 31.0}),
        (3, {"block_time": 1.0, "block_delay": -1.0}),
    ],
)
def test_a_network_out_of_range_is_refused(nodes, options):
    with pytest.raises(ValueError):
        LedgerNetwork(nodes, **options)
