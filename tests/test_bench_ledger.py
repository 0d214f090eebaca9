"""bench/ledger.py runs to the end at tiny sizes and prints its ratios (a smoke test, not a
measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "ledger.py"


def test_bench_ledger_runs_and_prints_ratios(tmp_path: Path) -> None:
    figures = tmp_path / "ledger.json"
    tiny = ["--count", "40", "--rounds", "1", "--blocks", "20", "--txs", "3"]
    result = subprocess.run(
        [sys.executable, str(BENCH), *tiny, "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("raw Ed25519 verify" in line for line in lines)
    ratios = [line for line in lines if "of raw (goal 0.70)" in line]
    assert len(ratios) == 2, result.stdout
    connect = [line for line in lines if "connect:" in line]
    # 20 blocks of payments after the 10 whose coinbases pay for them.
    assert len(connect) == 1 and "30 blocks" in connect[0] and "of raw" in connect[0], connect
    sync = [line for line in lines if "sync:" in line]
    assert len(sync) == 1 and "30 blocks" in sync[0] and "of connect" in sync[0], sync
    saved = json.loads(figures.read_text())
    assert saved["connect"]["payments"] == 60
    assert saved["sync"]["blocks"] == 30
    assert [entry["inputs"] for entry in saved["validation"]] == [1, 2]
