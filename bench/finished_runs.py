"""Operator memory over many finished runs: does RSS stay flat as runs finish?

    python -m bench.finished_runs [--runs 100000] [--every 10000] [--label after]

Drives the operator's own parts in one process — the WorkflowRun controller, the
scheduler service and its engine, the history store wrapper that marks durable
appends — with the API server replaced at the httpx transport (every request
answered 200) and an in-memory history store. Each run is applied (a watch event),
its workflow task polled by a registered worker, completed with a small result, its
history stored and its final status written; then its own status write comes back as
a MODIFIED watch event, as on a cluster. RSS is read from /proc every `--every` runs.
Results: bench/results/finished-runs.md and .json (appended per `--label`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import httpx

from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.k8s.api.events import EventRecorder
from tether_operator.k8s.runs.controller import RunController
from tether_operator.k8s.runs.mirror import MarkingStore
from tether_operator.k8s.runs.workflows import WorkflowDirectory
from tether_operator.scheduler.service import SchedulerService
from tether_operator.store.memory import DurableMemoryStore
from worker_runtime.protocol import RegisterWorkerRequest, ReportRequest, WorkflowSpec

RESULTS = Path(__file__).resolve().parent / "results"
NAMESPACE = "bench"


class ClusterLikeStore(DurableMemoryStore):
    """Durable, and like the Kubernetes store it keeps nothing of a finished run in memory
    once told to forget it (the history lives on in the API server, not here)."""

    def forget(self, run_id: str) -> None:
        self.backing.runs.pop(run_id, None)


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content) if request.content else None
    return httpx.Response(200, json=body or {})


def run_event(index: int, type_: str = "ADDED", status: Any = None) -> dict[str, Any]:
    name = f"r{index}"
    body: dict[str, Any] = {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"u-{name}", "generation": 1},
        "spec": {"workflowRef": {"name": "wf"}, "input": {"n": index}},
    }
    if status is not None:
        body["status"] = status
    return {"type": type_, "object": body}


async def measure(runs: int, every: int) -> list[tuple[int, float]]:
    client = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(answer))
    store = MarkingStore(ClusterLikeStore())
    service = SchedulerService(store=store, namespace=NAMESPACE)
    events = EventRecorder(client)
    controller = RunController(service, store, client, events, WorkflowDirectory())
    service.subscribe(controller.on_notice)
    await service.start()
    controller.status.start()
    events.start()
    service.register_worker(
        RegisterWorkerRequest(
            worker_id="pod-1",
            incarnation="i1",
            namespace=NAMESPACE,
            workflows=[WorkflowSpec(name="wf")],
            slots=1000,
        )
    )
    samples: list[tuple[int, float]] = []
    try:
        for index in range(runs):
            service.heartbeat("pod-1")
            await controller.on_event(run_event(index))
            # The last run's workflow task is cancelled once it ended: skip that message.
            tasks: list[dict[str, Any]] = []
            while not tasks:
                polled = await service.poll("pod-1", 8, 1.0)
                tasks = [m for m in polled if m["kind"] == "workflow"]
            (task,) = tasks
            batch = {
                "run_id": task["run_id"],
                "workflow_task_id": task["task_id"],
                "commands": [{"type": "complete_workflow", "seq": 1, "result": {"n": index}}],
            }
            service.report("pod-1", ReportRequest.model_validate({"workflows": [batch]}))
            await service.flush()  # the history is stored...
            if index % 100 == 99:
                await controller.status.flush()  # ...and final statuses are written
            final = {"phase": "Succeeded", "result": {"n": index}}
            await controller.on_event(run_event(index, "MODIFIED", final))
            if (index + 1) % every == 0:
                await service.flush()
                await controller.status.flush()
                gc.collect()
                samples.append((index + 1, rss_mib()))
                print(f"{index + 1:>7} runs  RSS {samples[-1][1]:7.1f} MiB", flush=True)
    finally:
        await events.stop()
        await controller.status.stop()
        await service.stop()
        await client.aclose()
    return samples


def growth_per_thousand(samples: list[tuple[int, float]]) -> float:
    """MiB per 1,000 runs between the first and the last sample (the first one
    includes the warm-up: imports, caches and allocator arenas)."""
    (n0, m0), (n1, m1) = samples[0], samples[-1]
    return (m1 - m0) / ((n1 - n0) / 1000) if n1 > n0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the Events queue overflows here: not measured
    started = time.monotonic()
    samples = asyncio.run(measure(args.runs, args.every))
    result = {
        "label": args.label,
        "runs": args.runs,
        "samples": samples,
        "mib_per_1000_runs": round(growth_per_thousand(samples), 3),
        "seconds": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "finished-runs.json"
    existing = json.loads(path.read_text()) if path.exists() else []
    existing = [r for r in existing if r["label"] != args.label] + [result]
    path.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))


if __name__ == "__main__":
    main()
