"""Where the time of one API-server write goes, on the kind cluster.

Each phase sends writes of one shape through the operator's own `KubeClient` and reads
the API server's and etcd's metrics before and after, so one write's time splits into:
what the client waited (the client's own HTTP/TLS and the network included), the API
server's handling of the request (`apiserver_request_duration_seconds`: decoding,
admission, the patch, conversion, validation, encoding), its wait on etcd
(`etcd_request_duration_seconds`), and inside etcd the WAL fsync and the backend commit.
CPU time per write, of the API server and of etcd, comes from their `process_cpu_seconds_total`:
on a 2-core machine shared with the nodes, CPU, not the disk, bounds writes per second.

    python bench/apiserver_writes.py [--quick]   # writes bench/results/apiserver-writes.md

It needs only the kind cluster (`hack/kind-up`, its exports in the environment): it
writes ConfigMaps in a namespace of its own (`tether-bench-writes-<time>`) and deletes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import KubeClient, load_config

NAMESPACE = f"tether-bench-writes-{int(time.time())}"
ETCD_NODE = "tether-control-plane"
"""kind's control-plane container: kubeadm's etcd serves /metrics on its loopback."""
ETCD_METRICS = "http://127.0.0.1:2381/metrics"
RESULTS = Path(__file__).parent / "results"
SEGMENT_KEYS = 32
"""Keys per growing ConfigMap before the next one: 32 x 1 KiB, like a history segment."""

Metrics = dict[str, float]
Write = Callable[[int], Awaitable[None]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _parse(text: str, wanted: tuple[str, ...]) -> Metrics:
    out: Metrics = {}
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def snapshot() -> tuple[Metrics, Metrics]:
    api = subprocess.run(
        ["kubectl", "get", "--raw", "/metrics"], capture_output=True, text=True, check=True
    ).stdout
    etcd = subprocess.run(
        ["docker", "exec", ETCD_NODE, "curl", "-fsS", ETCD_METRICS],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return (
        _parse(api, ("apiserver_request_duration_seconds_", "etcd_request_duration_seconds_",
                     "process_cpu_seconds_total")),
        _parse(etcd, ("etcd_disk_wal_fsync_duration_seconds_",
                      "etcd_disk_backend_commit_duration_seconds_", "process_cpu_seconds_total")),
    )  # fmt: skip


def _sum(metrics: Metrics, name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        if key.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


def _mean_ms(before: Metrics, after: Metrics, name: str, **labels: str) -> float | None:
    count = _sum(after, f"{name}_count", **labels) - _sum(before, f"{name}_count", **labels)
    if count <= 0:
        return None
    spent = _sum(after, f"{name}_sum", **labels) - _sum(before, f"{name}_sum", **labels)
    return round(1000 * spent / count, 3)


def _cpu_ms(before: Metrics, after: Metrics, writes: int) -> float:
    cpu = "process_cpu_seconds_total"
    return round(1000 * (_sum(after, cpu) - _sum(before, cpu)) / writes, 2)


async def _drive(write: Write, count: int, in_flight: int, first: int = 0) -> list[float]:
    """Send writes `first`.. `first + count - 1`, `in_flight` at a time; each one's
    latency in seconds."""
    latencies: list[float] = []
    queue = iter(range(first, first + count))

    async def lane() -> None:
        for i in queue:
            t0 = time.perf_counter()
            await write(i)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return latencies


async def phase(
    name: str, write: Write, count: int, *, in_flight: int, verb: str, operation: str
) -> dict[str, Any]:
    """`count` writes of one shape, `in_flight` at a time, and how their time splits."""
    await _drive(write, SEGMENT_KEYS, 1, first=10**6)  # warm the connection and caches
    (api0, etcd0) = snapshot()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    latencies = await _drive(write, count, in_flight)
    wall = time.perf_counter() - t0
    cpu1 = time.process_time()
    (api1, etcd1) = snapshot()
    latencies.sort()
    wal = _mean_ms(etcd0, etcd1, "etcd_disk_wal_fsync_duration_seconds")
    commit = _mean_ms(etcd0, etcd1, "etcd_disk_backend_commit_duration_seconds")
    return {
        "phase": name,
        "writes": count,
        "in_flight": in_flight,
        "writes_per_s": round(count / wall),
        "client_p50_ms": round(1000 * statistics.median(latencies), 2),
        "client_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "apiserver_handling_mean_ms": _mean_ms(
            api0, api1, "apiserver_request_duration_seconds", verb=verb, resource="configmaps"
        ),
        "apiserver_waiting_on_etcd_mean_ms": _mean_ms(
            api0, api1, "etcd_request_duration_seconds", operation=operation, resource="configmaps"
        ),
        "etcd_wal_fsync_mean_ms": wal,
        "etcd_backend_commit_mean_ms": commit,
        "apiserver_cpu_ms_per_write": _cpu_ms(api0, api1, count),
        "etcd_cpu_ms_per_write": _cpu_ms(etcd0, etcd1, count),
        "client_cpu_ms_per_write": round(1000 * (cpu1 - cpu0) / count, 2),
    }


def _config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def run(quick: bool) -> list[dict[str, Any]]:
    client = KubeClient(load_config())
    n = 100 if quick else 400
    kib = "x" * 1024
    stamp = str(int(time.time()))
    try:
        results = []

        def creator(prefix: str) -> Write:
            async def create(i: int) -> None:
                await client.create(
                    paths.configmaps(NAMESPACE), _config_map(f"{prefix}-{stamp}-{i}", {"0": kib})
                )

            return create

        async def append(i: int) -> None:
            # Like a history append: one more 1 KiB key in the newest segment.
            segment, key = divmod(i, SEGMENT_KEYS)
            name = f"seg-{stamp}-{segment}"
            if key == 0:
                await client.create(paths.configmaps(NAMESPACE), _config_map(name, {"0": kib}))
            else:
                await client.patch(paths.configmaps(NAMESPACE, name), {"data": {str(key): kib}})

        await client.create(paths.configmaps(NAMESPACE), _config_map(f"status-{stamp}", {}))

        async def status(i: int) -> None:
            # Like a status write: a small object's 2 KiB field replaced.
            body = {"data": {"status": json.dumps({"i": i, "pad": kib * 2})}}
            await client.patch(paths.configmaps(NAMESPACE, f"status-{stamp}"), body)

        create, patch = (
            {"verb": "POST", "operation": "create"},
            {
                "verb": "PATCH",
                "operation": "update",
            },
        )
        shapes: list[tuple[str, Write, int, int, dict[str, str]]] = [
            ("create a 1 KiB ConfigMap", creator("one"), n, 1, create),
            ("patch: one more 1 KiB key in a segment (up to 32 KiB)", append, n, 1, patch),
            ("patch: a 2 KiB status-sized field replaced", status, n, 1, patch),
            ("create a 1 KiB ConfigMap, 8 in flight", creator("c8"), 4 * n, 8, create),
            ("create a 1 KiB ConfigMap, 32 in flight", creator("c32"), 4 * n, 32, create),
        ]
        for name, write, count, lanes, kind in shapes:
            results.append(await phase(name, write, count, in_flight=lanes, **kind))
        return results
    finally:
        await client.aclose()


def render(results: list[dict[str, Any]], when: str) -> str:
    columns = [k for k in results[0] if k != "phase"]
    lines = [
        f"# Where an API-server write's time goes ({when})",
        "",
        "kind cluster (hack/kind-up) on this machine: etcd 3.6, kube-apiserver and three",
        "kubelets on 2 cores. `python bench/apiserver_writes.py`; milliseconds are means",
        "from the servers' own metrics unless named p50/p99 (the client's).",
        "",
        "| phase | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for row in results:
        lines.append(f"| {row['phase']} | " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer writes (smoke run)")
    parser.add_argument("--out", default=str(RESULTS / "apiserver-writes"))
    args = parser.parse_args()
    subprocess.run(["kubectl", "create", "namespace", NAMESPACE], check=True)
    try:
        results = asyncio.run(run(args.quick))
    finally:
        subprocess.run(["kubectl", "delete", "namespace", NAMESPACE, "--wait=false"], check=False)
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"when": when, "phases": results}, indent=2))
    out.with_suffix(".md").write_text(render(results, when))
    print(render(results, when))


if __name__ == "__main__":
    main()
