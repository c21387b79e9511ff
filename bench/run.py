"""Dev-mode benchmarks: real scheduler and worker processes on loopback.

    python -m bench.run [--quick] [--only NAME ...]

Writes bench/results/latest.json and bench/results/latest.md. Every number is a median
(or a percentile) of samples taken in this one run; ratios compare numbers from the
same run, because this machine is noisy.

The `*_durable` benches run the same workloads against a scheduler whose store is
durable (`bench/scheduler_main.py`): every delivery and acknowledgement waits for its
history to be written, with no store latency (`_durable`) or 5 ms per write
(`_durable_5ms`, about a Kubernetes API write); their ratios to the dev-mode figures
of the same run are added when both ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.progress import run_benches

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A scheduler process plus worker processes, torn down on exit."""

    url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def worker(self, role: str, worker_id: str, slots: int = 64, capacity: int = 4) -> None:
        cmd = [
            sys.executable,
            "-m",
            "bench.worker_main",
            role,
            worker_id,
            self.url,
            str(slots),
            str(capacity),
        ]
        self.procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL))

    def wait_workers(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = httpx.get(f"{self.url}/v1/workers").json()["workers"]
            if sum(1 for w in workers if w["alive"]) >= n:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{n} workers did not register within {timeout}s")

    def start(self, workflow: str, input_: Any) -> str:
        r = httpx.post(f"{self.url}/v1/runs", json={"workflow": workflow, "input": input_})
        r.raise_for_status()
        return str(r.json()["run_id"])

    def wait(self, run_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(f"{self.url}/v1/runs/{run_id}/wait", params={"timeout": 30}, timeout=40)
            r.raise_for_status()
            view: dict[str, Any] = r.json()
            if view["phase"] in ("Succeeded", "Failed", "Cancelled"):
                if view["phase"] != "Succeeded":
                    raise RuntimeError(f"run {run_id} {view['phase']}: {view.get('error')}")
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(run_id)

    def execute(self, workflow: str, input_: Any) -> Any:
        return self.wait(self.start(workflow, input_))["result"]


@contextlib.contextmanager
def cluster(write_delay: float | None = None) -> Iterator[Cluster]:
    """A scheduler (with a durable store if `write_delay` is set) and its workers."""
    port = free_port()
    c = Cluster(url=f"http://127.0.0.1:{port}")
    if write_delay is None:
        argv = [sys.executable, "-m", "tether_operator.scheduler", "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "bench.scheduler_main", str(port), str(write_delay)]
    sched = subprocess.Popen(argv, cwd=ROOT)
    c.procs.append(sched)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{c.url}/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not start")
            time.sleep(0.05)
        yield c
    finally:
        for p in reversed(c.procs):
            p.terminate()
        for p in c.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_roundtrip(quick: bool, write_delay: float | None = None) -> dict[str, Any]:
    n = 300 if quick else 2000
    with cluster(write_delay) as c:
        c.worker("workflows", "bench-wf")
        c.worker("activities", "bench-act")
        c.wait_workers(2)
        c.execute("bench-roundtrip", {"n": 50})  # warm up connections and code paths
        lat = [s * 1000 for s in c.execute("bench-roundtrip", {"n": n})]
    return {
        "samples": n,
        "p50_ms": round(statistics.median(lat), 3),
        "p90_ms": round(pct(lat, 0.90), 3),
        "p99_ms": round(pct(lat, 0.99), 3),
        "target": "p50 <= 2 ms, p99 <= 10 ms",
    }


def bench_local(quick: bool) -> dict[str, Any]:
    n = 2000 if quick else 20000
    overheads = []
    with cluster() as c:
        c.worker("all", "bench-local")
        c.wait_workers(1)
        for _ in range(5):
            r = c.execute("bench-local", {"n": n})
            overheads.append((r["local"] - r["direct"]) / n * 1000)
    return {
        "calls_per_sample": n,
        "samples": len(overheads),
        "overhead_ms_median": round(statistics.median(overheads), 4),
        "target": "<= 0.2 ms",
    }


def bench_throughput(quick: bool, write_delay: float | None = None) -> dict[str, Any]:
    runs, per_run = (4, 1000) if quick else (8, 2500)
    rates = []
    with cluster(write_delay) as c:
        for i in range(4):
            c.worker("all", f"bench-tp-{i}", slots=256)
        c.wait_workers(4)
        c.execute("bench-fanout", {"n": 200})
        for _ in range(3):
            t0 = time.perf_counter()
            ids = [c.start("bench-fanout", {"n": per_run}) for _ in range(runs)]
            for rid in ids:
                c.wait(rid)
            rates.append(runs * per_run / (time.perf_counter() - t0))
    return {
        "workers": 4,
        "activities_per_sample": runs * per_run,
        "samples": len(rates),
        "activities_per_s_median": round(statistics.median(rates)),
        "target": ">= 2000/s on 2 cores",
    }


def bench_sticky(quick: bool) -> dict[str, Any]:
    runs, predictions = 8, (10 if quick else 20)
    out: dict[str, Any] = {
        "workers": 4,
        "runs": runs,
        "predictions_per_run": predictions,
        "load_s": 1.0,
        "predict_s": 0.05,
        # One load per run, then the predictions one after another.
        "ideal_s": round(1.0 + predictions * 0.05, 3),
    }
    for mode in ("sticky", "plain"):
        totals, loads = [], []
        for sample in range(1 if quick else 3):
            with cluster() as c:
                for i in range(4):
                    c.worker("all", f"bench-{mode}-{i}", slots=8, capacity=2)
                c.wait_workers(4)
                t0 = time.perf_counter()
                ids = [
                    c.start(f"bench-inference-{mode}", {"key": f"m{sample}-{k}", "n": predictions})
                    for k in range(runs)
                ]
                views = [c.wait(rid) for rid in ids]
                totals.append(time.perf_counter() - t0)
                loads.append(sum(v["result"] for v in views))
        out[f"{mode}_total_s_median"] = round(statistics.median(totals), 3)
        out[f"{mode}_total_s_samples"] = [round(t, 3) for t in totals]
        out[f"{mode}_model_loads_median"] = statistics.median(loads)
    out["speedup_sticky_vs_plain"] = round(
        out["plain_total_s_median"] / out["sticky_total_s_median"], 2
    )
    return out


BENCHES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "roundtrip": bench_roundtrip,
    "roundtrip_durable": lambda quick: bench_roundtrip(quick, 0.0),
    "roundtrip_durable_5ms": lambda quick: bench_roundtrip(quick, 0.005),
    "local": bench_local,
    "throughput": bench_throughput,
    "throughput_durable": lambda quick: bench_throughput(quick, 0.0),
    "throughput_durable_5ms": lambda quick: bench_throughput(quick, 0.005),
    "sticky": bench_sticky,
}


def add_ratios(benches: dict[str, dict[str, Any]]) -> None:
    """Each durable figure as a ratio to the dev-mode one of the same run."""
    for base, key in (("roundtrip", "p50_ms"), ("roundtrip", "p99_ms")):
        for variant in ("_durable", "_durable_5ms"):
            if base in benches and base + variant in benches:
                ratio = benches[base + variant][key] / benches[base][key]
                benches[base + variant][f"{key}_vs_dev_mode"] = round(ratio, 2)
    for variant in ("_durable", "_durable_5ms"):
        if "throughput" in benches and "throughput" + variant in benches:
            key = "activities_per_s_median"
            ratio = benches["throughput" + variant][key] / benches["throughput"][key]
            benches["throughput" + variant][f"{key}_vs_dev_mode"] = round(ratio, 2)


def render(results: dict[str, Any]) -> str:
    lines = [f"# Benchmark results ({results['when']})", "", f"Machine: {results['machine']}", ""]
    for name, data in results["benches"].items():
        lines.append(f"## {name}")
        lines.extend(f"- {k}: {v}" for k, v in data.items())
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    parser.add_argument("--out", default=str(RESULTS / "latest"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "benches": {},
    }
    run_benches(args.only or list(BENCHES), BENCHES, args.quick, results["benches"])
    add_ratios(results["benches"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(results) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
