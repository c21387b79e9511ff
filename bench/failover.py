"""Leader failover times: run the e2e leader test with kills, then tabulate them.

    TETHER_E2E_FAILOVER_KILLS=graceful,forced,crash,... \\
    TETHER_E2E_FAILOVER_OUT=/tmp/failover.jsonl  pytest tests/e2e/test_leader_k8s.py -k killed
    python -m bench.failover /tmp/failover.jsonl

Each line of the input is one kill of the leader pod while runs go on: `how`
(graceful: `kubectl delete pod`; forced: `--grace-period=0 --force`; crash: SIGKILL of
the operator process, the container restarts without releasing the Lease), `ready`
(seconds from the kill until another operator holds the Lease, serves and carries
the leader label) and `progress` (seconds until the first step the new leader
dispatched completed). Writes bench/results/failover.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ("graceful", "forced", "crash")


def table(kills: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| kill | kills | new leader serving: median (min..max) s "
        "| runs progress again: median (min..max) s |",
        "| --- | --- | --- | --- |",
    ]
    for how in ORDER:
        mine = [k for k in kills if k["how"] == how]
        if not mine:
            continue
        cells = []
        for key in ("ready", "progress"):
            values = [k[key] for k in mine]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f})")
        lines.append(f"| {how} | {len(mine)} | {cells[0]} | {cells[1]} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="the JSON lines the e2e test appended")
    args = parser.parse_args()
    kills = [json.loads(line) for line in args.input.read_text().splitlines() if line.strip()]
    text = "\n".join(
        [
            f"# Leader failover ({time.strftime('%Y-%m-%d %H:%M:%S')})",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores (load average "
            f"{os.getloadavg()[0]:.1f} when tabulated; the cluster and other test runs "
            "share it, 3 to 10 during the kills). Chart "
            "defaults: 2 operator replicas, Lease 15 s, renew deadline 10 s, retry 2 s. "
            "Four runs of 0.4 s steps (two in SOFT sessions) go on during the kills; every "
            "run succeeded and no completed step ran twice.",
            "",
            *table(kills),
            "",
            "- graceful: `kubectl delete pod LEADER`; the leader releases the Lease as it "
            "stops and the standby takes it at its next try.",
            "- forced: `kubectl delete pod LEADER --grace-period=0 --force`; the API object "
            "goes at once, but the kubelet still stops the container with SIGTERM and a "
            "short grace, so the Lease is released as well.",
            "- crash: SIGKILL of the operator process (the container restarts in the same "
            "pod, as a new candidate): nobody releases the Lease, a standby takes it once "
            "its record is 15 s old.",
            "- Runs progress again later than the new leader serves: workers find it through "
            "the Service once the leader label is set, register again, and the step "
            "dispatched then takes 0.4 s.",
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failover.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
