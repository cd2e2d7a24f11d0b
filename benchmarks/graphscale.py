"""Benchmark: the graph side at scale in one command (issue 17).

Runs, one after the other on this machine, each with its own fresh embedded
server: `store_write.py` (the batched writer and the flow writer against
hand-written UNWINDs of the same rows, deadlocks counted), `flowscale.py`
(flow queries at 100,000 and 500,000 stored flows against label scans, the
query plans, RSS and disk per flow, the analyzer's memory through a pcap
import) and `gremlin.py` (REST Gremlin against hand-written Cypher on 10,000
interfaces and 100,000 flows). Each prints its figures beside their targets
and anchors; this script passes their output through, then lists what each
missed.

    .venv/bin/python benchmarks/graphscale.py [--quick]

Exit status: 0 when every target is met, 1 when one is missed, 2 when a
benchmark cannot run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
QUICK = {  # a short pass to check the benchmarks run (the figures are not the targets')
    "store_write.py": ["--nodes", "2000", "--flows", "2000"],
    "flowscale.py": ["--sizes", "20000", "--runs", "5", "--anchor-runs", "2",
                     "--import-flows", "5000"],
    "gremlin.py": ["--namespaces", "10", "--interfaces", "10", "--flows", "1000",
                   "--runs", "10"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = ap.parse_args()
    results: list[tuple[str, int, list[str], float]] = []
    for script in ("store_write.py", "flowscale.py", "gremlin.py"):
        cmd = [sys.executable, "-u", str(HERE / script), *(QUICK[script] if args.quick else [])]
        print(f"\n######## {' '.join(cmd[2:])} (load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
        began = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        missed = []
        for line in proc.stdout:
            sys.stdout.write(line)
            if "MISS" in line or " FAIL" in line:
                missed.append(line.strip())
        results.append((script, proc.wait(), missed, time.monotonic() - began))
    print("\n######## summary")
    worst = 0
    for script, code, missed, secs in results:
        verdict = {0: "all targets met", 1: "MISSED"}.get(code, f"could not run ({code})")
        print(f"{script:<16} {verdict} ({secs:.0f} s)")
        for line in missed:
            print(f"    {line}")
        worst = max(worst, 0 if code == 0 else 1 if code == 1 else 2)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
