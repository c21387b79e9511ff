"""The Kubernetes run store against the cluster KUBECONFIG names.

    python -m bench.store_bench [--prefix bench] [--quick] [--only-latency]

Creates a namespace `<prefix>-store-<random>` with WorkflowRun objects to own the
history (the CRDs must be installed: `kubectl apply -f crds/`), measures, deletes the
namespace, and writes bench/results/store-latest.md and .json. Measured: append
latency (one run, sequential; without and with fencing, interleaved), the cost of a
patch by how full its segment is (interleaved rounds, so load on the machine hits
every size alike), throughput with 8 and 64
runs appending at once, loading a 1,000-activity history in a new store instance,
the largest object of that run, and a 2 MiB result's round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tether_operator.k8s.api.client import ApiError, KubeClient, load_config, resource_path
from tether_operator.k8s.resources.naming import run_id_for
from tether_operator.k8s.store.history import SEGMENT_BYTES, KubernetesRunStore
from tether_operator.store.fencing import Fence

RESULTS = Path(__file__).resolve().parent / "results"
API_VERSION = "tether.dev/v1alpha1"

Event = dict[str, Any]


def activity(seq: int, result: Any = None) -> list[Event]:
    """The four events one activity adds to a run's history (~750 bytes of JSON)."""
    return [
        {
            "type": "ActivityScheduled",
            "time": 1000.0 + seq,
            "data": {
                "seq": seq,
                "activity": "predict",
                "args": [seq, {"text": "hello world"}],
                "kwargs": {},
                "options": {"start_to_close_timeout": 30.0, "retry_policy_max_attempts": 3},
                "session_id": "ns.run/s1",
            },
        },
        {
            "type": "ActivityStarted",
            "time": 1000.1 + seq,
            "data": {
                "seq": seq,
                "task_id": f"t-{seq}",
                "attempt": 1,
                "worker": "pool-abc12",
                "pod": "pool-abc12",
                "node": "node-1",
                "cold_start": False,
            },
        },
        {
            "type": "ActivityCompleted",
            "time": 1000.2 + seq,
            "data": {
                "seq": seq,
                "attempt": 1,
                "result": {"label": "positive", "score": 0.9} if result is None else result,
            },
        },
        {"type": "TimerFired", "time": 1000.3 + seq, "data": {"seq": seq}},
    ]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.ns = namespace
        self.counter = 0

    async def new_run(self) -> tuple[str, str]:
        self.counter += 1
        name = f"run-{self.counter}"
        body = {
            "apiVersion": API_VERSION,
            "kind": "WorkflowRun",
            "metadata": {"name": name},
            "spec": {"workflowRef": {"name": "bench"}},
        }
        obj = await self.client.create(resource_path(API_VERSION, "workflowruns", self.ns), body)
        return run_id_for(self.ns, name), obj["metadata"]["uid"]

    def store(
        self,
        *runs: tuple[str, str],
        segment_bytes: int = SEGMENT_BYTES,
        fence: Fence | None = None,
    ) -> KubernetesRunStore:
        store = KubernetesRunStore(self.client, [self.ns], segment_bytes=segment_bytes, fence=fence)
        for run_id, uid in runs:
            store.bind(run_id, uid)
        return store

    async def latency(self, appends: int, segment_bytes: int) -> list[dict[str, Any]]:
        """One run per store, plain and fenced (epoch 1), appending in turns: the same
        moments of load hit both."""
        kinds = {"off": None, "on": Fence(epoch=1)}
        stores = {kind: (await self.new_run(), fence) for kind, fence in kinds.items()}
        bound = {
            kind: (run, self.store(run, segment_bytes=segment_bytes, fence=fence))
            for kind, (run, fence) in stores.items()
        }
        samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        for seq in range(1, appends + 1):
            for kind, (run, store) in bound.items():
                start = time.perf_counter()
                await store.append(run[0], activity(seq))
                samples[kind].append((time.perf_counter() - start) * 1000)
        return [
            {
                "fencing": kind,
                "segment_kib": segment_bytes // 1024,
                "appends": appends,
                "events_per_append": 4,
                "p50_ms": round(pct(got, 0.5), 2),
                "p99_ms": round(pct(got, 0.99), 2),
                "last_quarter_p50_ms": round(statistics.median(got[-appends // 4 :]), 2),
            }
            for kind, got in samples.items()
        ]

    async def fill_cost(
        self, fills_kib: list[int], rounds: int, patches: int
    ) -> list[dict[str, Any]]:
        """Median latency of a 750-byte merge patch into a ConfigMap holding `fill` KiB."""
        path = resource_path("v1", "configmaps", self.ns)
        samples: dict[int, list[float]] = {fill: [] for fill in fills_kib}
        for round_ in range(rounds):
            for fill in fills_kib:
                name = f"fill-{fill}-{round_}"
                keys = max(1, fill * 1024 // 760)
                data = {f"{i:08d}": "x" * 750 for i in range(keys)}
                await self.client.create(path, {"metadata": {"name": name}, "data": data})
                for i in range(patches):
                    start = time.perf_counter()
                    await self.client.patch(f"{path}/{name}", {"data": {f"z{i:07d}": "y" * 750}})
                    samples[fill].append((time.perf_counter() - start) * 1000)
                await self.client.delete(f"{path}/{name}")
        return [
            {
                "fill_kib": fill,
                "patches": len(samples[fill]),
                "p50_ms": round(pct(samples[fill], 0.5), 2),
                "p99_ms": round(pct(samples[fill], 0.99), 2),
            }
            for fill in fills_kib
        ]

    async def throughput(self, runs: int, seconds: float, per_append: int) -> dict[str, Any]:
        bound = [await self.new_run() for _ in range(runs)]
        store = self.store(*bound)
        writes = self.client.writes
        deadline = time.perf_counter() + seconds
        counts = [0] * runs

        async def drive(index: int) -> None:
            seq = 0
            while time.perf_counter() < deadline:
                batch = [e for k in range(per_append) for e in activity(seq + k + 1)]
                seq += per_append
                await store.append(bound[index][0], batch)
                counts[index] += len(batch)

        start = time.perf_counter()
        await asyncio.gather(*(drive(i) for i in range(runs)))
        elapsed = time.perf_counter() - start
        return {
            "runs": runs,
            "events_per_append": 4 * per_append,
            "seconds": round(elapsed, 1),
            "events_per_s": round(sum(counts) / elapsed),
            "appends_per_s": round(sum(counts) / 4 / per_append / elapsed),
            "api_writes_per_s": round((self.client.writes - writes) / elapsed),
        }

    async def big_history(self, activities: int) -> dict[str, Any]:
        run = await self.new_run()
        store = self.store(run)
        start = time.perf_counter()
        for seq in range(1, activities + 1):
            await store.append(run[0], activity(seq))
        write_s = time.perf_counter() - start
        loads = []
        for _ in range(3):
            fresh = self.store()
            start = time.perf_counter()
            ids = await fresh.run_ids()
            events = await fresh.load(run[0])
            loads.append(time.perf_counter() - start)
            assert run[0] in ids
            assert len(events) == 4 * activities
        cms = await self.client.list(
            resource_path("v1", "configmaps", self.ns),
            label_selector=f"tether.dev/run={run[0].split('.', 1)[1]}",
        )
        sizes = [len(json.dumps(c)) for c in cms]
        wfr = await self.client.get(
            resource_path(API_VERSION, "workflowruns", self.ns, run[0].split(".", 1)[1])
        )
        return {
            "activities": activities,
            "events": 4 * activities,
            "history_json_bytes": sum(len(json.dumps(e)) for e in events),
            "write_s": round(write_s, 2),
            "load_s_median": round(statistics.median(loads), 3),
            "load_s_samples": [round(x, 3) for x in loads],
            "objects": len(cms),
            "largest_object_bytes": max(sizes),
            "workflowrun_object_bytes": len(json.dumps(wfr)),
        }

    async def payload(self, compressible: bool) -> dict[str, Any]:
        run = await self.new_run()
        store = self.store(run)
        if compressible:
            row_bytes = len(json.dumps({"id": 99_999, "label": "positive", "score": 0.99999})) + 2
            rows = [
                {"id": i, "label": "positive", "score": i / 1e5}
                for i in range(2 * 1024 * 1024 // row_bytes)
            ]
            result: Any = {"rows": rows}
        else:
            result = base64.b64encode(os.urandom(3 * 512 * 1024 - 3)).decode()
        events = activity(1, result=result)
        start = time.perf_counter()
        await store.append(run[0], events)
        write_s = time.perf_counter() - start
        fresh = self.store()
        start = time.perf_counter()
        loaded = await fresh.load(run[0])
        load_s = time.perf_counter() - start
        assert loaded == events
        chunks = await self.client.list(
            resource_path("v1", "configmaps", self.ns),
            label_selector=f"tether.dev/part=payload,tether.dev/run={run[0].split('.', 1)[1]}",
        )
        return {
            "kind": "JSON rows (compressible)"
            if compressible
            else "random base64 (incompressible)",
            "result_bytes": len(json.dumps(result)),
            "chunks": len(chunks),
            "largest_chunk_bytes": max(len(json.dumps(c)) for c in chunks),
            "append_s": round(write_s, 3),
            "load_s": round(load_s, 3),
        }


async def run_all(prefix: str, quick: bool, only_latency: bool = False) -> dict[str, Any]:
    client = KubeClient(load_config())
    ns = f"{prefix}-store-{uuid.uuid4().hex[:6]}"
    await client.create(resource_path("v1", "namespaces"), {"metadata": {"name": ns}})
    bench = Bench(client, ns)
    results: dict[str, Any] = {}
    try:
        n = 100 if quick else 400
        results["latency"] = await bench.latency(n, SEGMENT_BYTES)
        if only_latency:
            return results
        results["fill_cost"] = await bench.fill_cost(
            [4, 16, 32, 64, 256, 768], rounds=2 if quick else 4, patches=10 if quick else 20
        )
        secs = 3.0 if quick else 10.0
        results["throughput"] = [
            await bench.throughput(runs, secs, per_append)
            for runs, per_append in ((1, 1), (8, 1), (64, 1), (8, 8), (64, 8))
        ]
        results["history_1000"] = await bench.big_history(200 if quick else 1000)
        results["payload_2mib"] = [await bench.payload(False), await bench.payload(True)]
    finally:
        try:
            await client.delete(resource_path("v1", "namespaces", name=ns))
        except ApiError as exc:
            print(f"could not delete namespace {ns}: {exc}", file=sys.stderr)
        await client.aclose()
    return results


def server_version() -> str:
    try:
        out = subprocess.run(
            ["kubectl", "version", "-o", "json"], capture_output=True, text=True, check=False
        ).stdout
        return str(json.loads(out)["serverVersion"]["gitVersion"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def markdown(results: dict[str, Any], header: str) -> str:
    lines = [header, ""]
    lines += [
        "## Append latency, one run, sequential (4 events per append)",
        "",
        "Fencing on: a JSON patch testing the segment's `tether.dev/epoch` annotation and",
        "a sealing patch per rollover; the two runs append in turns.",
        "",
        "| fencing | segment KiB | appends | p50 ms | p99 ms | p50 of last quarter ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["latency"]:
        lines.append(
            f"| {r.get('fencing', 'off')} | {r['segment_kib']} | {r['appends']} | {r['p50_ms']} "
            f"| {r['p99_ms']} | {r['last_quarter_p50_ms']} |"
        )
    if "fill_cost" not in results:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Cost of one append by how full its segment is (why segments are small)",
        "",
        "A 750-byte merge patch into a ConfigMap already holding `fill` KiB; the sizes take",
        "turns in rounds, so a busy moment on the machine hits each of them alike.",
        "",
        "| fill KiB | patches | p50 ms | p99 ms |",
        "| --- | --- | --- | --- |",
    ]
    for r in results["fill_cost"]:
        lines.append(f"| {r['fill_kib']} | {r['patches']} | {r['p50_ms']} | {r['p99_ms']} |")
    lines += [
        "",
        "## Throughput, runs appending at once (default segments)",
        "",
        "Each run appends sequentially; 32 events per append is what the history writer",
        "sends when 8 activities of a run finish during one write.",
        "",
        "| runs | events per append | seconds | events/s | appends/s | API writes/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['runs']} | {r['events_per_append']} | {r['seconds']} | {r['events_per_s']} "
            f"| {r['appends_per_s']} "
            f"| {r['api_writes_per_s']} |"
        )
    h = results["history_1000"]
    lines += ["", f"## A {h['activities']}-activity history", ""]
    lines += [f"- {k}: {v}" for k, v in h.items()]
    lines += ["", "## A 2 MiB activity result: append, then load in a new store", ""]
    lines += ["| result | bytes | chunks | largest chunk bytes | append s | load s |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for p in results["payload_2mib"]:
        lines.append(
            f"| {p['kind']} | {p['result_bytes']} | {p['chunks']} | {p['largest_chunk_bytes']} "
            f"| {p['append_s']} | {p['load_s']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="bench", help="namespace prefix")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument(
        "--only-latency",
        action="store_true",
        help="only the append latency, without and with fencing (to store-fencing.md)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = asyncio.run(run_all(args.prefix, args.quick, args.only_latency))
    header = (
        f"# Kubernetes run store benchmark ({time.strftime('%Y-%m-%d %H:%M:%S')})\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Kubernetes {server_version()}; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (the cluster runs on "
        "this machine)."
    )
    RESULTS.mkdir(exist_ok=True)
    stem = "store-fencing" if args.only_latency else "store-latest"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results, header)
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
