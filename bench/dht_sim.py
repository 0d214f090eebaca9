"""Benchmark: the DHT scenario as the network grows, against the issue's goals.

Runs `run_dht` (nodes join, settle, then lookups under churn) at each N and prints wall
seconds, the share of lookups that found the closest live node, the median hop count against
the bound ceil(log2(N) / 3) + 2, and the messages per lookup against log2(N) (a ratio that
stays flat if the cost grows as log N). The goals at 10,000 nodes and churn 0.2: success at
least 0.99, median hops within the bound, under 300 s of wall time.
"""

from __future__ import annotations

import argparse
import math
import sys

from shoal.sim.dht import run_dht


def main() -> int:
    """Run each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--churn", type=float, default=0.2)
    parser.add_argument("--lookups", type=int, default=100)
    parser.add_argument("--session-shape", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    columns = (
        ("nodes", 6),
        ("wall s", 7),
        ("sim s", 6),
        ("success", 7),
        ("hops", 4),
        ("bound", 5),
        ("msgs", 5),
        ("msgs/log2 N", 11),
        ("latency s", 9),
    )
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    for nodes in sorted(args.nodes):
        report = run_dht(
            nodes, args.churn, args.lookups, seed=args.seed, session_shape=args.session_shape
        )
        bound = math.ceil(math.log2(nodes) / 3) + 2
        messages = report.messages_per_lookup["median"]
        print(
            f"{nodes:>6} {report.wall_seconds:>7.1f} {report.simulated_seconds:>6.0f}"
            f" {report.success_rate:>7.3f} {report.hops['median']:>4.0f} {bound:>5}"
            f" {messages:>5.0f} {messages / math.log2(nodes):>11.2f}"
            f" {report.latency_seconds['median']:>9.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
