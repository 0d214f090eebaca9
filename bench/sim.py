"""Benchmark: the simulator's wall time as the swarm grows, against n log n growth.

Runs `shoal sim swarm` (one seeder, N - 1 leechers, 4 MiB) at each N and prints wall seconds,
events per second and wall seconds per node. The ratio column divides each run's wall time by
what n log n growth from the smallest N predicts: near 1 means it scales as n log n, above 1
worse. The goal is 1,000 nodes in under 60 s of wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

SHOAL = Path(sys.executable).parent / "shoal"


def run(nodes: int, size_mib: int, seed: int) -> dict[str, float]:
    """One `shoal sim swarm --json` run."""
    argv = [str(SHOAL), "sim", "swarm", "--nodes", str(nodes), "--size-mib", str(size_mib)]
    result = subprocess.run(
        [*argv, "--seed", str(seed), "--json"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"shoal sim swarm failed at {nodes} nodes: {result.stderr.strip()}")
    report: dict[str, float] = json.loads(result.stdout)
    return report


def main() -> int:
    """Run each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--size-mib", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    columns = ("nodes", 6), ("wall s", 8), ("sim s", 7), ("events/s", 9), ("wall s/node", 11)
    print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'vs n log n':>10}")
    base: tuple[int, float] | None = None
    for nodes in sorted(args.nodes):
        report = run(nodes, args.size_mib, args.seed)
        wall = report["wall_seconds"]
        if base is None:
            base = (nodes, wall)
        smallest, smallest_wall = base
        predicted = smallest_wall * (nodes * math.log(nodes)) / (smallest * math.log(smallest))
        print(
            f"{nodes:>6} {wall:>8.1f} {report['simulated_seconds']:>7.1f}"
            f" {report['events'] / wall:>9.0f} {wall / nodes:>11.3f} {wall / predicted:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
