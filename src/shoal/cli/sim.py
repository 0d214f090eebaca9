"""demo and sim: the real cores on loopback, and by the thousand on a simulated network."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import click

from ..progress import human_size
from .common import (
    main,
    run,
)


@main.command()
@click.option("--leechers", type=click.IntRange(1, 20), default=4, help="How many leechers.")
@click.option("--size-mib", type=click.IntRange(1, 4096), default=24, help="Size of the file.")
@click.option(
    "--ledger", is_flag=True, help="Run the ledger demo instead: mining, payments, a partition."
)
def demo(leechers: int, size_mib: int, ledger: bool) -> None:
    """Run a hub, a DHT and the overlay on loopback: one seeder lists a file in all three, one
    search finds it three ways, and several leechers download it, trading pieces. With
    --ledger: three ledger nodes mine and pay each other, and a partition heals."""
    if ledger:
        from ..demo_ledger import run_ledger_demo

        run(run_ledger_demo)
        return
    from ..demo import run_demo

    run(lambda: run_demo(leechers=leechers, size=size_mib * 1024 * 1024))


@main.group()
def sim() -> None:
    """Run the real cores by the thousand on a simulated network and clock."""


class FiniteRange(click.FloatRange):
    """A number in a range; nan, which compares false with every bound, is refused."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, or a usage error."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


def scenario_options(command: Callable[..., Any], session_shape: float = 1.0) -> Callable[..., Any]:
    """--session-shape, --seed and --json, which every simulated scenario takes."""
    command = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(
        command
    )
    command = click.option(
        "--seed", type=click.IntRange(0, 2**63), default=1, help="Seed of every random choice."
    )(command)
    return click.option(
        "--session-shape",
        type=FiniteRange(0.1, 10),
        default=session_shape,
        help="Weibull shape of session lengths (1: exponential; measured P2P traces: 0.3-0.6).",
    )(command)


@sim.command("swarm")
@click.option(
    "--nodes",
    type=click.IntRange(2, 5000),
    default=100,
    help="Nodes, the seeder too (1,000 take about a minute, 5,000 several and 4 GiB).",
)
@click.option("--size-mib", type=click.IntRange(1, 256), default=4, help="Size of the torrent.")
@click.option(
    "--churn",
    type=FiniteRange(0, 100),
    default=0.0,
    help="Departures per leecher per simulated second (0: nobody leaves).",
)
@scenario_options
def sim_swarm(
    nodes: int, size_mib: int, churn: float, session_shape: float, seed: int, as_json: bool
) -> None:
    """One seeder and NODES - 1 leechers joining within 10 s, until every live leecher is done."""
    from ..sim.scenario import run_swarm

    report = run_swarm(
        nodes, size_mib * 1024 * 1024, churn=churn, seed=seed, session_shape=session_shape
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    spread = report.completion_seconds
    click.echo(
        f"{report.nodes} nodes, {human_size(report.size_bytes)}, churn {report.churn:g}/s,"
        f" seed {report.seed}"
    )
    click.echo(
        f"simulated {report.simulated_seconds:.1f} s in {report.wall_seconds:.1f} s of wall time;"
        f" {report.events} events, {human_size(report.bytes_moved)} moved"
    )
    click.echo(
        f"completed {report.completed}, left early {report.departed},"
        f" unfinished {report.unfinished}"
    )
    if spread:
        click.echo(
            "completion times (s): "
            + ", ".join(f"{name} {value:.1f}" for name, value in spread.items())
        )


@sim.command("dht")
@click.option("--nodes", type=click.IntRange(2, 20_000), default=1000, help="DHT nodes.")
@click.option(
    "--churn",
    type=FiniteRange(0, 1),
    default=0.0,
    help="Share of the nodes that leave, each replaced by a newcomer, during the lookups.",
)
@click.option("--lookups", type=click.IntRange(1, 100_000), default=100, help="Lookups to run.")
@scenario_options
def sim_dht(
    nodes: int, churn: float, lookups: int, session_shape: float, seed: int, as_json: bool
) -> None:
    """A DHT of NODES nodes joining, settling, then random lookups while nodes come and go."""
    from ..sim.dht import run_dht

    report = run_dht(nodes, churn, lookups, seed, session_shape)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"{report.nodes} DHT nodes, churn {report.churn:g} ({report.departed} replaced),"
        f" seed {report.seed}"
    )
    click.echo(
        f"simulated {report.simulated_seconds:.1f} s in {report.wall_seconds:.1f} s of wall time;"
        f" {report.events} events, {report.datagrams} datagrams"
    )
    click.echo(
        f"lookups: {report.completed} of {report.lookups} completed,"
        f" {report.success_rate:.1%} reached the closest live node,"
        f" {report.timed_out} ran out of time"
    )
    for label, figures in (
        ("hops", report.hops),
        ("messages per lookup", report.messages_per_lookup),
        ("latency (s)", report.latency_seconds),
    ):
        click.echo(f"{label}: " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))


@sim.command("compare")
@click.option("--nodes", type=click.IntRange(2, 20_000), default=1000, help="Nodes.")
@click.option(
    "--churn",
    type=FiniteRange(0, 100),
    default=0.0,
    help="Share of the nodes replaced per simulated hour (each by a newcomer).",
)
@click.option(
    "--replication",
    type=FiniteRange(0.0001, 1),
    default=0.01,
    help="Share of the nodes holding each queried listing (at least one node).",
)
@click.option("--queries", type=click.IntRange(1, 10_000), default=20, help="Queries to run.")
@click.option(
    "--listings", type=click.IntRange(1, 1000), default=5, help="Listings the queries ask for."
)
@click.option(
    "--wanted",
    type=click.IntRange(1, 1000),
    default=20,
    help="Results an overlay search stops at (1: satisfied by one, as Lv et al. measured).",
)
@click.option(
    "--leaves",
    type=FiniteRange(0, 0.95),
    default=0.0,
    help="Share of the overlay's nodes that are leaves (0: all ultrapeers, a flat overlay).",
)
@functools.partial(scenario_options, session_shape=0.5)
def sim_compare(
    nodes: int,
    churn: float,
    replication: float,
    queries: int,
    listings: int,
    wanted: int,
    leaves: float,
    session_shape: float,
    seed: int,
    as_json: bool,
) -> None:
    """The hub, the DHT and the overlay (flood, walk, dynamic) on one population of NODES
    nodes, the same listings, the same queries from the same nodes."""
    from ..sim.compare import run_compare

    report = run_compare(
        nodes,
        churn,
        replication,
        queries,
        seed,
        listings=listings,
        wanted=wanted,
        leaves=leaves,
        session_shape=session_shape,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"{report.nodes} nodes, churn {report.churn:g}/h ({report.departed} replaced),"
        f" {report.listings} listings each held by {report.holders} nodes,"
        f" {report.queries} queries (overlay searches stop at {report.wanted} results),"
        f" {report.leaves:.0%} of the overlay leaves, seed {report.seed}"
    )
    click.echo(
        f"simulated {report.simulated_seconds:.1f} s in {report.wall_seconds:.1f} s of wall time;"
        f" {report.events} events; background and searches: {report.hub_publishes} hub"
        f" publishes, {report.dht_datagrams} DHT datagrams, {report.overlay_messages} overlay"
        " messages"
    )
    click.echo(
        f"{'':8} {'success':>7} {'found':>11} {'stale':>5} {'msgs/query':>10} {'busiest':>13}"
        f" {'first s':>7} {'last s':>7}"
    )
    for name, figures in report.architectures.items():
        found = f"{figures.holders_found:g}/{figures.holders_alive:g}"
        busiest = f"{figures.busiest_node_messages} {figures.busiest_node_share:.0%}"
        click.echo(
            f"{name:8} {figures.success_rate:>7.1%} {found:>11} {figures.stale_results:>5g}"
            f" {figures.messages_per_query.get('mean', 0):>10g} {busiest:>13}"
            f" {figures.first_result_seconds.get('median', 0):>7g}"
            f" {figures.last_result_seconds.get('median', 0):>7g}"
        )
    click.echo(
        "msgs/query: the search's own queries, answers, hits and statuses (mean);"
        " busiest: the most one node or the hub handled, and its share of them;"
        " first and last: medians of successful searches"
    )


class BlockTimes(click.ParamType[tuple[float, ...]]):
    """A comma-separated list of block times in seconds, each positive and finite."""

    name = "SECONDS,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The block times, or a usage error."""
        if isinstance(value, tuple):
            return value
        try:
            times = tuple(float(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a list of numbers", param, ctx)
        if not 1 <= len(times) <= 20 or not all(0.01 <= t <= 86_400 for t in times):
            self.fail(f"{value!r} is not 1 to 20 block times of 0.01 to 86400 s", param, ctx)
        return times


@sim.command("ledger")
@click.option("--nodes", type=click.IntRange(2, 1000), default=100, help="Ledger nodes.")
@click.option(
    "--latency",
    type=FiniteRange(0, 10),
    default=0.1,
    help="One-way latency of a link in seconds (each link's drawn within ±50% of it).",
)
@click.option(
    "--block-times",
    type=BlockTimes(),
    default="600,60,10,2,0.5",
    help="Mean seconds between blocks, one run each (a 600 s run takes minutes of wall time).",
)
@click.option(
    "--blocks", type=click.IntRange(1, 10_000), default=200, help="Blocks to mine in each run."
)
@click.option(
    "--block-delay",
    type=FiniteRange(0, 600),
    default=0.0,
    help="Seconds a node spends on each block it takes in (checks, a full block's transfer).",
)
@click.option("--outbound", type=click.IntRange(1, 16), default=4, help="Peers each node dials.")
@click.option(
    "--seed", type=click.IntRange(0, 2**63), default=1, help="Seed of every random choice."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sim_ledger(
    nodes: int,
    latency: float,
    block_times: tuple[float, ...],
    blocks: int,
    block_delay: float,
    outbound: int,
    seed: int,
    as_json: bool,
) -> None:
    """NODES ledger cores on a random graph mine BLOCKS blocks at each block time: how many go
    stale (forks) as blocks come faster than they spread."""
    from ..sim.ledger import LedgerRun, run_ledger

    if outbound >= nodes:
        raise click.BadParameter(
            f"{outbound} is not fewer than the {nodes} nodes", param_hint="--outbound"
        )

    def print_row(run: LedgerRun) -> None:
        spread = run.propagation_seconds
        click.echo(
            f"{run.block_time:>8g} {run.blocks:>6} {run.stale:>5} {run.fork_rate:>9.1%}"
            f" {spread.get('p50', math.nan):>7.2f} {spread.get('p90', math.nan):>7.2f}"
            f" {sum(run.reorgs.values()):>6} {run.max_reorg_depth:>7}"
            f" {run.simulated_seconds:>11.0f} {run.wall_seconds:>7.1f}"
            + ("" if run.converged else "  (nodes ended on different tips)")
        )

    if not as_json:
        click.echo(
            f"{nodes} nodes each dialling {outbound}, one-way latency {latency:g} s,"
            f" block delay {block_delay:g} s, seed {seed}"
        )
        click.echo(
            f"{'block s':>8} {'blocks':>6} {'stale':>5} {'fork rate':>9} {'to 50%':>7}"
            f" {'to 90%':>7} {'reorgs':>6} {'deepest':>7} {'simulated s':>11} {'wall s':>7}"
        )
    report = run_ledger(
        nodes,
        block_times,
        blocks,
        latency=latency,
        block_delay=block_delay,
        outbound=outbound,
        seed=seed,
        on_run=(lambda run: None) if as_json else print_row,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        "stale: mined but not in the final best chain; to 50%/90%: median seconds for a block"
        " to be on the active chain of that share of nodes; reorgs: seen by all nodes in all"
    )
