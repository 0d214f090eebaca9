"""Benchmark: the hub, the DHT and the overlay side by side (`run_compare`), swept over the
network's size, churn and replication; writes docs/architectures.md, its plots (PNG, in
docs/) and the figures behind them (docs/architectures.json).

The sweep: N of 1,000, 3,000 and 10,000 by churn of none and half the nodes per hour by
replication of 0.1%, 1% and 10%, with overlay searches satisfied by one result (as Lv et al.
measured walks against floods); at the smallest N, churn of 2 and 8 per hour too; and at each
N with 1% replication, searches that stop at 20 results (`shoal search`'s default).

    python bench/architectures.py [--jobs 2]        # run everything, then write the report
    python bench/architectures.py --report-only     # write the report from the saved figures
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from revision import commit

from shoal.sim.compare import QUERY_PHASE, run_compare
from shoal.sim.compare_report import ARCHITECTURES

DOCS = Path(__file__).resolve().parent.parent / "docs"
RESULTS = DOCS / "architectures.json"
REPORT = DOCS / "architectures.md"
OVERLAY = ("flood", "walk", "dynamic")
QUERIES = 20
SEED = 1
# Lv et al. 2002: walks with checking reach flooding's success with this many times fewer
# messages on replicated content.
LV_FACTOR = 10.0
# A success rate this close to flooding's counts as reaching it.
SUCCESS_SLACK = 0.05

Run = dict[str, Any]


def plan(nodes: list[int], churns: list[float], replications: list[float]) -> list[Run]:
    """Every run of the sweep, the largest first (so that parallel jobs end together)."""
    runs = [
        {"nodes": n, "churn": c, "replication": r, "wanted": 1}
        for n in nodes
        for c in churns
        for r in replications
    ]
    smallest = min(nodes)
    runs += [
        {"nodes": smallest, "churn": c, "replication": r, "wanted": 1}
        for c in (2.0, 8.0)
        for r in replications
    ]
    runs += [{"nodes": n, "churn": 0.0, "replication": 0.01, "wanted": 20} for n in nodes]
    return sorted(runs, key=lambda run: -run["nodes"])


def measure(run: Run) -> Run:
    """One run of run_compare, as a plain dict."""
    report = run_compare(
        run["nodes"], run["churn"], run["replication"], QUERIES, SEED, wanted=run["wanted"]
    )
    return report.as_dict()


def mean_messages(result: Run, name: str) -> float:
    return float(result["architectures"][name]["messages_per_query"].get("mean", 0.0))


def ratios(result: Run) -> str:
    """What one run says at a glance: success, and the overlay's messages against flooding's."""
    figures = result["architectures"]
    flood = mean_messages(result, "flood")
    parts = [
        f"N={result['nodes']} churn={result['churn']:g}/h repl={result['replication']:g}"
        f" wanted={result['wanted']} wall={result['wall_seconds']:.0f}s",
        "success " + " ".join(f"{n}={figures[n]['success_rate']:.2f}" for n in ARCHITECTURES),
    ]
    for name in ("walk", "dynamic"):
        other = mean_messages(result, name)
        parts.append(f"{name}/flood msgs={other / flood:.3f}" if flood else f"{name}: no flood")
    parts.append(f"dht msgs={mean_messages(result, 'dht'):.1f}")
    return "; ".join(parts)


def run_all(runs: list[Run], jobs: int) -> list[Run]:
    """Run them all, jobs at a time, printing each as it ends."""
    results = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(measure, runs):
            print(ratios(result), flush=True)
            results.append(result)
    return results


# The report.


def select(results: list[Run], **fields: float) -> list[Run]:
    """The results whose fields have these values, by N, churn and replication."""
    chosen = [r for r in results if all(r[k] == v for k, v in fields.items())]
    return sorted(chosen, key=lambda r: (r["nodes"], r["churn"], r["replication"]))


def lv_check(results: list[Run]) -> tuple[list[str], bool, bool]:
    """Rows of the Lv et al. check on replicated content without churn; whether walks, and
    whether dynamic querying, reached flooding's success with LV_FACTOR times fewer messages
    in every such run."""
    rows = []
    holds = {"walk": True, "dynamic": True}
    for result in select(results, churn=0.0, wanted=1):
        if result["replication"] < 0.01:
            continue
        figures = result["architectures"]
        flood = mean_messages(result, "flood")
        cells = [f"{result['nodes']:,}", f"{result['replication']:.1%}"]
        cells.append(f"{figures['flood']['success_rate']:.0%} / {flood:,.0f}")
        for name in ("walk", "dynamic"):
            messages = mean_messages(result, name)
            factor = flood / messages if messages else math.inf
            reached = (
                figures[name]["success_rate"] >= figures["flood"]["success_rate"] - SUCCESS_SLACK
            )
            holds[name] &= reached and factor >= LV_FACTOR
            cells.append(f"{figures[name]['success_rate']:.0%} / {messages:,.0f} ({factor:.1f}x)")
        rows.append("| " + " | ".join(cells) + " |")
    return rows, holds["walk"], holds["dynamic"]


def verdict(holds: bool) -> str:
    """A claim as the data answers it."""
    return "supported" if holds else "**not supported**"


def rare_content(results: list[Run]) -> str:
    """Walks and dynamic querying on rare content (below 1%), against flooding."""
    rare = [r for r in results if r["replication"] < 0.01 and r["wanted"] == 1]
    if not rare:
        return ""

    def spread(name: str) -> str:
        rates = [r["architectures"][name]["success_rate"] for r in rare]
        return f"{min(rates):.0%} to {max(rates):.0%}"

    def reached(name: str) -> bool:
        return all(
            r["architectures"][name]["success_rate"]
            >= r["architectures"]["flood"]["success_rate"] - SUCCESS_SLACK
            for r in rare
        )

    holders = sorted({r["holders"] for r in rare})
    return (
        f"On rare content ({rare[0]['replication']:.1%}: {', '.join(map(str, holders))} holders)"
        f" over {len(rare)} runs, churn or not, flooding found a holder in {spread('flood')} of"
        f" its searches, walks in {spread('walk')} and dynamic querying in {spread('dynamic')}."
        f" Reaching flooding's success (within {SUCCESS_SLACK:.0%}) in every such run: walks "
        + verdict(reached("walk"))
        + ", dynamic querying "
        + verdict(reached("dynamic"))
        + "."
    )


def dht_scaling(results: list[Run]) -> tuple[list[str], float, float]:
    """Rows of the DHT's cost by N without churn (mean over replications), and how its
    messages and hops grew from the smallest N to the largest, against log2 N's growth."""
    rows = []
    by_nodes: dict[int, tuple[float, float]] = {}
    for nodes in sorted({r["nodes"] for r in results}):
        chosen = [r for r in select(results, nodes=nodes, churn=0.0, wanted=1)]
        if not chosen:
            continue
        dht = [r["architectures"]["dht"] for r in chosen]
        messages = statistics.fmean(d["messages_per_query"]["mean"] for d in dht)
        hops = statistics.fmean(d["hops"].get("median", 0.0) for d in dht)
        by_nodes[nodes] = (messages, hops)
        rows.append(
            f"| {nodes:,} | {messages:.1f} | {hops:.1f} | {messages / math.log2(nodes):.2f} |"
        )
    sizes = sorted(by_nodes)
    if len(sizes) < 2:
        return rows, 0.0, 0.0
    small, large = by_nodes[sizes[0]], by_nodes[sizes[-1]]
    return rows, large[0] / small[0], math.log2(sizes[-1]) / math.log2(sizes[0])


def metric_table(
    results: list[Run], title: str, cell: Callable[[dict[str, Any]], str]
) -> list[str]:
    """One table: a row per run, a column per architecture."""
    lines = [
        f"**{title}**",
        "",
        "| N | churn /h | replication | wanted | " + " | ".join(ARCHITECTURES) + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(ARCHITECTURES),
    ]
    for r in sorted(results, key=lambda r: (r["wanted"], r["nodes"], r["churn"], r["replication"])):
        cells = [cell(r["architectures"][name]) for name in ARCHITECTURES]
        lines.append(
            f"| {r['nodes']:,} | {r['churn']:g} | {r['replication']:.1%} | {r['wanted']} | "
            + " | ".join(cells)
            + " |"
        )
    return [*lines, ""]


def plots(results: list[Run]) -> list[str]:
    """Draw the PNG plots into docs/; their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"hub": "s-", "dht": "o-", "flood": "^-", "walk": "v-", "dynamic": "D-"}
    replications = sorted({r["replication"] for r in results})
    names = []

    figure, axes = plt.subplots(1, len(replications), figsize=(4 * len(replications), 3.6))
    for axis, replication in zip(_axes(axes), replications, strict=True):
        chosen = select(results, churn=0.0, wanted=1, replication=replication)
        for name in ARCHITECTURES:
            xs = [r["nodes"] for r in chosen]
            ys = [mean_messages(r, name) for r in chosen]
            axis.plot(xs, ys, styles[name], label=name)
        axis.set(xscale="log", yscale="log", xlabel="nodes", title=f"replication {replication:.1%}")
        _nodes_axis(axis, [r["nodes"] for r in chosen])
    _axes(axes)[0].set_ylabel("messages per query (mean)")
    _axes(axes)[-1].legend(fontsize="small")
    names.append(_save(figure, "architectures-messages.png"))

    figure, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    smallest = min(r["nodes"] for r in results)
    chosen = [r for r in select(results, nodes=smallest, wanted=1) if r["replication"] == 0.01]
    churns = [r["churn"] for r in chosen]
    for name in ARCHITECTURES:
        figures = [r["architectures"][name] for r in chosen]
        axes[0].plot(churns, [f["success_rate"] for f in figures], styles[name], label=name)
        axes[1].plot(churns, [f["stale_results"] for f in figures], styles[name], label=name)
    axes[0].set(
        xlabel="churn (share of nodes replaced per hour)", ylabel="success rate", ylim=(0, 1.05)
    )
    axes[1].set(
        xlabel="churn (share of nodes replaced per hour)", ylabel="stale results per search"
    )
    axes[0].set_title(f"{smallest:,} nodes, replication 1%")
    axes[1].legend(fontsize="small")
    names.append(_save(figure, "architectures-churn.png"))

    figure, axis = plt.subplots(figsize=(4.5, 3.6))
    chosen = select(results, churn=0.0, wanted=1, replication=0.01)
    for name in ARCHITECTURES:
        ys = [r["architectures"][name]["busiest_node_messages"] / r["queries"] for r in chosen]
        axis.plot([r["nodes"] for r in chosen], ys, styles[name], label=name)
    axis.set(
        xscale="log",
        yscale="log",
        xlabel="nodes",
        ylabel="busiest node's messages per query",
        title="replication 1%, no churn",
    )
    _nodes_axis(axis, [r["nodes"] for r in chosen])
    axis.legend(fontsize="small")
    names.append(_save(figure, "architectures-load.png"))
    return names


def _nodes_axis(axis: Any, nodes: list[int]) -> None:
    """Ticks at the sizes measured, and no others."""
    axis.set_xticks(nodes, labels=[f"{n:,}" for n in nodes])
    axis.minorticks_off()


def _axes(axes: Any) -> list[Any]:
    return list(axes) if hasattr(axes, "__iter__") else [axes]


def _save(figure: Any, name: str) -> str:
    figure.tight_layout()
    figure.savefig(DOCS / name, dpi=110)
    return name


def churn_rows(results: list[Run]) -> list[str]:
    """Success, live holders found and stale results as churn rises, at the smallest N."""
    smallest = min(r["nodes"] for r in results)
    rows = []
    for r in select(results, nodes=smallest, wanted=1):
        cells = [f"{r['churn']:g}", f"{r['replication']:.1%}", str(r["departed"])]
        for name in ARCHITECTURES:
            f = r["architectures"][name]
            cells.append(
                f"{f['success_rate']:.0%} {f['holders_found']:g}/{f['holders_alive']:g}"
                f" ({f['stale_results']:g})"
            )
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def churn_verdicts(results: list[Run]) -> list[str]:
    """Per architecture: its success rates without churn and with, over every run where
    searches are satisfied by one result."""
    lines = []
    for name in ARCHITECTURES:
        still = [
            r["architectures"][name]["success_rate"]
            for r in results
            if r["churn"] == 0 and r["wanted"] == 1
        ]
        moving = [
            r["architectures"][name]["success_rate"]
            for r in results
            if r["churn"] > 0 and r["wanted"] == 1
        ]
        stale = [r["architectures"][name]["stale_results"] for r in results if r["churn"] > 0]
        if still and moving:
            lines.append(
                f"- {name}: success {min(still):.0%} to {max(still):.0%} without churn,"
                f" {min(moving):.0%} to {max(moving):.0%} with churn;"
                f" stale results per search up to {max(stale, default=0):g}."
            )
    return lines


def churn_claims(results: list[Run]) -> list[str]:
    """The source text's claims about churn and hybrids, each as the runs at the smallest N
    answer it: mean success over the replications at the highest churn against none."""
    smallest = min(r["nodes"] for r in results)
    runs = select(results, nodes=smallest, wanted=1)
    if not runs:
        return []
    highest = max(r["churn"] for r in runs)

    def success(name: str, churn: float) -> float:
        rates = [r["architectures"][name]["success_rate"] for r in runs if r["churn"] == churn]
        return statistics.fmean(rates) if rates else math.nan

    change = {name: success(name, highest) - success(name, 0.0) for name in ARCHITECTURES}
    overlay_holds = all(change[name] >= -SUCCESS_SLACK for name in OVERLAY)
    dht_suffers = change["dht"] < -SUCCESS_SLACK
    every = [r for r in results if r["wanted"] == 1]
    hub_best = all(
        r["architectures"]["hub"]["success_rate"]
        >= max(r["architectures"][n]["success_rate"] for n in ARCHITECTURES)
        and mean_messages(r, "hub") <= min(mean_messages(r, n) for n in ARCHITECTURES)
        for r in every
    )
    changes = ", ".join(f"{name} {change[name]:+.0%}" for name in ARCHITECTURES)
    stale_shares = []
    for churn in sorted({r["churn"] for r in runs if r["churn"] > 0}):
        hub = [r["architectures"]["hub"] for r in runs if r["churn"] == churn]
        stale = sum(f["stale_results"] for f in hub)
        named = stale + sum(f["holders_found"] for f in hub)
        stale_shares.append(f"{stale / named:.0%} at {churn:g} per hour" if named else "")
    return [
        f"Mean success at {smallest:,} nodes from no churn to {highest:g} per hour changed by:"
        f" {changes} (each rate is over {QUERIES} queries, so one miss is {1 / QUERIES:.0%}).",
        "",
        '- "The unstructured overlay tolerates churn well": '
        + ("supported" if overlay_holds else "**not supported**")
        + f" (no strategy lost more than {SUCCESS_SLACK:.0%}).",
        '- "Structured networks suffer under churn": '
        + ("supported" if dht_suffers else "**not supported** at these rates")
        + f" (the DHT's success changed by {change['dht']:+.0%}"
        + (
            ")."
            if dht_suffers
            else "; its listings sit on 8 nodes each, and only departures during the 2-minute"
            " phase thin them)."
        ),
        "- The hub's results naming departed holders (of all it named, over the replications):"
        f" {', '.join(stale_shares)}; a searcher dials those in vain.",
        '- "Hybrids usually perform best": '
        + ("supported" if hub_best else "**not supported**")
        + " for success and messages per query (the hub's at least as high, and fewest,"
        " in every run); at the price of all the load on one node, and of stale results.",
    ]


def write_report(results: list[Run], wall_10k: str) -> None:
    """docs/architectures.md from the results."""
    pictures = plots(results)
    lv_rows, walks_hold, dynamic_holds = lv_check(results)
    dht_rows, dht_growth, log_growth = dht_scaling(results)
    sizes = sorted({r["nodes"] for r in results})
    hub_shares = {r["architectures"]["hub"]["busiest_node_share"] for r in results}
    others_share = max(
        r["architectures"][name]["busiest_node_share"]
        for r in results
        for name in ("dht", *OVERLAY)
    )
    largest = select(results, nodes=sizes[-1], churn=0.0, replication=0.01, wanted=1)
    busiest = ""
    flood_vs_hub = 0.0
    if largest:
        hub_load = largest[0]["architectures"]["hub"]["busiest_node_messages"]
        flood_load = largest[0]["architectures"]["flood"]["busiest_node_messages"]
        flood_vs_hub = flood_load / hub_load if hub_load else 0.0
        figures = largest[0]["architectures"]
        queries = largest[0]["queries"]
        busiest = ", ".join(
            f"{name} {figures[name]['busiest_node_messages'] / queries:.1f}"
            for name in ARCHITECTURES
        )

    most_publishes = max(
        (r["hub_publishes"] for r in select(results, nodes=sizes[-1], churn=0.0)), default=0
    )
    first_results = ""
    if largest:
        figures = largest[0]["architectures"]
        first_results = (
            f"**Time to the first result** at {sizes[-1]:,} nodes and 1%, median (p90), simulated"
            " seconds: "
            + ", ".join(
                f"{name} {figures[name]['first_result_seconds'].get('median', math.nan):g}"
                f" ({figures[name]['first_result_seconds'].get('p90', math.nan):g})"
                for name in ARCHITECTURES
            )
            + " (50 ms one way; a walker waits for its origin's word after 4, 8, 16 hops)."
        )

    lines = [
        "# The three architectures measured side by side",
        "",
        "Made by `python bench/architectures.py` (`make bench`); the figures behind every table"
        " and plot are in `architectures.json`. Each run is `shoal sim compare` (see the README):"
        " N real DHT cores and N real overlay cores (all ultrapeers, a flat overlay, degree 8) on"
        " one simulated network and clock, plus the hub as one server running the real keyword"
        " index (SQLite FTS5). Nodes join at 200 a second, list what they hold on the hub at once"
        " and in the DHT once their join lookup is over, and settle for 60 s; then"
        f" {QUERIES} queries run over {QUERY_PHASE:.0f} s, each from one settled node for one of"
        " 5 listings by its name (two words), at the same moment through the hub, the DHT and the"
        " overlay by flooding (TTL 4), 16 random walkers that check back with the origin, and"
        " dynamic querying. Each listing is held by the given share of the nodes (at least one)."
        " 50 ms one way between any two nodes and to the hub.",
        "",
        "- **Success**: at least one holder found alive when the result arrives. A hub result"
        " names every publisher whose listing has not expired (the tracker's peers); a DHT result"
        " is a signed listing (a reply holds 4 at most); an overlay hit comes from the holder.",
        "- **Messages per query**: the search's own traffic: the hub's request and reply; the DHT"
        " lookup's queries and the answers to them; the overlay's queries, hits and statuses"
        " carrying the search's id. Keep-alives, pongs, joins, upkeep and publishing are"
        " background, reported apart in the JSON (`hub_publishes`, `dht_datagrams`,"
        " `overlay_messages`).",
        "- **Busiest node**: the most of those messages one node (or the hub) sent or received"
        " over the run, per query.",
        "- **Churn** F: sessions are Weibull of shape 0.5 (Stutzbach and Rejaie measured 0.3-0.6)"
        " and mean 1/F hours, each seat's sessions running from ten means before the queries,"
        " so the nodes present are a long-running network's mix; a node that leaves is replaced"
        " at once by a newcomer holding the same listings, so N and the number of holders stay"
        " constant. The hub keeps a departed node's listings until they expire (an hour after"
        " its last refresh, every 30 minutes), including those of nodes that left in the hour"
        " before the queries; the DHT keeps them an hour too, but only departures during the run"
        " are modelled there. Over the 2-minute query phase, churn of 0.5 per hour replaces"
        " about 1.7% of the nodes, so the runs at 2 and 8 per hour show the trend.",
        "- **Wanted**: the results an overlay search stops at: 1 (satisfied by one result, as"
        " Lv et al. measured) in the sweep, 20 (`shoal search`'s default) in the last rows.",
        "",
        "Wall time of one run with all three at 10,000 nodes on this machine (2 cores):"
        f" {wall_10k}.",
        "",
        "## Findings",
        "",
        f"**Random walks and dynamic querying against flooding (Lv et al. 2002).** Walks reaching"
        f" flooding's success (within {SUCCESS_SLACK:.0%}) with at least {LV_FACTOR:g}x fewer"
        f" messages on replicated content (1% and 10%), in every run without churn:"
        f" {verdict(walks_hold)}. Dynamic querying, the same: {verdict(dynamic_holds)}.",
        "",
        "| N | replication | flood: success / msgs | walk: success / msgs (flood/walk) |"
        " dynamic: success / msgs (flood/dynamic) |",
        "|---:|---:|---:|---:|---:|",
        *lv_rows,
        "",
        rare_content(results),
        "",
        f"**DHT lookups and O(log n).** From {sizes[0]:,} to {sizes[-1]:,} nodes the DHT's"
        f" messages per query grew {dht_growth:.2f}x while log2 N grew {log_growth:.2f}x and N"
        f" {sizes[-1] / sizes[0]:g}x: "
        + (
            "consistent with O(log n) (supported)."
            if dht_growth <= 1.5 * log_growth
            else "**growth faster than log n: not supported**."
        ),
        "",
        "| N | messages per query | hops (median) | messages / log2 N |",
        "|---:|---:|---:|---:|",
        *dht_rows,
        "",
        "**Where the hub's load concentrates.** The hub took part in"
        f" {', '.join(f'{s:.0%}' for s in sorted(hub_shares))} of the hub's search messages in"
        " every run: it alone answers every query (2 messages each, whatever N) and takes every"
        f" listing (up to {most_publishes:,} in a run at {sizes[-1]:,} nodes without churn, again"
        " at each 30-minute refresh). The busiest node of any other architecture took part in"
        " at most"
        f" {others_share:.1%} of its architecture's messages. Per query, though, the busiest"
        f" node's messages at {sizes[-1]:,} nodes and 1% were: {busiest}"
        + (
            f": under flooding the busiest ultrapeer handled {flood_vs_hub:.1f} times the hub's"
            " messages per query, as a flood reaches it over many of its links."
            if flood_vs_hub > 1
            else "."
        ),
        "",
        first_results,
        "",
        "**As churn rises** (lowest and highest success rate over the runs):",
        "",
        *churn_verdicts(results),
        "",
        *churn_claims(results),
        "",
        f"At {sizes[0]:,} nodes, success, live holders found / alive, and (stale results) per"
        " search:",
        "",
        "| churn /h | replication | departed | " + " | ".join(ARCHITECTURES) + " |",
        "|---:|---:|---:|" + "---:|" * len(ARCHITECTURES),
        *churn_rows(results),
        "",
        "## Plots",
        "",
        *[f"![{name}]({name})" for name in pictures],
        "",
        "## Tables",
        "",
        *metric_table(results, "Success rate", lambda f: f"{f['success_rate']:.0%}"),
        *metric_table(
            results,
            "Messages per query (mean)",
            lambda f: f"{f['messages_per_query'].get('mean', 0):,.1f}",
        ),
        *metric_table(
            results,
            "Busiest node: messages over the run (share of all)",
            lambda f: f"{f['busiest_node_messages']:,} ({f['busiest_node_share']:.1%})",
        ),
        *metric_table(
            results,
            "Time to the first and the last result, seconds (medians)",
            lambda f: (
                f"{f['first_result_seconds'].get('median', math.nan):g} /"
                f" {f['last_result_seconds'].get('median', math.nan):g}"
            ),
        ),
        *metric_table(
            results,
            "Live holders found / alive, and stale results per search",
            lambda f: f"{f['holders_found']:g}/{f['holders_alive']:g} ({f['stale_results']:g})",
        ),
    ]
    REPORT.write_text("\n".join(lines).rstrip() + "\n")


def wall_time(results: Iterable[Run], jobs: int) -> str:
    """The wall time of the 10,000-node runs, as measured in the sweep."""
    walls = [r["wall_seconds"] for r in results if r["nodes"] == 10_000]
    if not walls:
        return "not measured (no 10,000-node run)"
    return (
        f"{min(walls):.0f} to {max(walls):.0f} s over the sweep's {len(walls)} runs"
        f" ({jobs} run{'s' if jobs > 1 else ''} at a time)"
    )


def main() -> int:
    """Run the sweep (or read it back) and write the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--churn", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--replication", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    parser.add_argument("--jobs", type=int, default=1, help="Runs at once (one core each).")
    parser.add_argument("--report-only", action="store_true", help="Use the saved figures.")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads(RESULTS.read_text())
    else:
        began = time.perf_counter()
        measured_at = commit()  # the code is imported by now: later edits do not count
        runs = run_all(plan(args.nodes, args.churn, args.replication), args.jobs)
        print(f"sweep: {time.perf_counter() - began:.0f} s of wall time", flush=True)
        saved = {"jobs": args.jobs, "commit": measured_at, "runs": runs}
        RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    measured = f"{wall_time(saved['runs'], saved['jobs'])}; measured at commit {saved['commit']}"
    write_report(saved["runs"], measured)
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
