"""Cluster benchmarks: the operator installed with Helm, worker pods, the Kubernetes store.

    python -m bench.cluster [--quick] [--only NAME ...] [--store apiserver|postgres]
                                                                (make bench-cluster)

`--store postgres` installs the chart with its embedded Postgres (on a volume from
`hack/local-pv`) as the history store; the default is the API server.

Needs KUBECONFIG (the kind cluster: `eval "$(hack/kind-up env)"`) and the `tether:dev`
image in the nodes. The benchmark code (bench/workloads.py) reaches the stock image as a
ConfigMap mounted into the worker pods. Writes bench/results/cluster-STORE.{json,md}; every
figure is a median or percentile of samples from this one run, and the dev-mode figures
it is compared with are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import run as devbench
from bench.progress import run_benches
from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import KubeClient, load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAMESPACE = "tether-bench"
RELEASE, RELEASE_NS = "tether", "tether-system"
IMAGE = os.environ.get("TETHER_IMAGE", "tether:dev")
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def kubectl(*args: str, stdin: str | None = None, namespace: str | None = NAMESPACE) -> str:
    cmd = ["kubectl", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def apply(*objects: dict[str, Any]) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


POSTGRES_PV = "tether-bench-postgres"
POSTGRES_OWNER = "999:999"
"""The postgres user of the tether-postgres image."""


def install(store: str = "apiserver") -> bool:
    """The chart (as a user installs it, with history in `store`) and a namespace
    holding the benchmark code; True if the release was not there before (so
    `uninstall` removes it again)."""
    repository, _, tag = IMAGE.rpartition(":")
    values = [f"--set=image.repository={repository}", f"--set=image.tag={tag}"]
    if store == "postgres":
        subprocess.run(
            [str(ROOT / "hack" / "local-pv"), "create", POSTGRES_PV, "2Gi", POSTGRES_OWNER],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        values += [
            "--set=store.type=postgres",
            "--set=store.postgres.embedded.enabled=true",
            "--set=store.postgres.embedded.storageClassName=tether-local",
        ]
    fresh = (
        subprocess.run(
            ["helm", "status", RELEASE, "-n", RELEASE_NS], capture_output=True, check=False
        ).returncode
        != 0
    )
    subprocess.run(
        ["helm", "upgrade", "--install", RELEASE, str(ROOT / "charts" / "tether"),
         "-n", RELEASE_NS, "--create-namespace", "--wait", "--timeout", "180s", *values],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if not _exists("namespace", NAMESPACE):
        kubectl("create", "namespace", NAMESPACE, namespace=None)
    files = [
        f"--from-file={ROOT / 'bench' / name}"
        for name in ("__init__.py", "workloads.py", "worker_main.py")
    ]
    manifest = kubectl(
        "create", "configmap", "bench-code", *files, "--dry-run=client", "-o", "json"
    )
    kubectl("apply", "-f", "-", stdin=manifest)
    return fresh


def uninstall(release_too: bool, store: str = "apiserver") -> None:
    """Remove the benchmark namespace, and the release if this run installed it."""
    kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s", namespace=None)
    if release_too:
        subprocess.run(
            ["helm", "uninstall", RELEASE, "-n", RELEASE_NS, "--wait"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if store == "postgres":
            kubectl("delete", "pvc", f"data-{RELEASE}-postgres-0", "--ignore-not-found",
                    namespace=RELEASE_NS)  # fmt: skip
            subprocess.run([str(ROOT / "hack" / "local-pv"), "delete", POSTGRES_PV], check=True)


def _exists(kind: str, name: str) -> bool:
    return (
        subprocess.run(["kubectl", "get", kind, name], capture_output=True, check=False).returncode
        == 0
    )


def pool(name: str, role: str, replicas: int, slots: int = 64, capacity: int = 4) -> dict[str, Any]:
    """A WorkerPool running bench/worker_main.py from the `bench-code` ConfigMap."""
    return {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "slots": slots,
            "sessionCapacity": capacity,
            "template": {
                "spec": {
                    "containers": [{
                        "name": "worker",
                        "image": IMAGE,
                        "command": ["python", "-m", "bench.worker_main", role,
                                    "$(TETHER_WORKER_ID)", "$(TETHER_SCHEDULER_URL)",
                                    str(slots), str(capacity)],
                        "env": [{"name": "PYTHONPATH", "value": "/opt/bench"}],
                        "volumeMounts": [{"name": "code", "mountPath": "/opt/bench/bench"}],
                    }],
                    "volumes": [{"name": "code", "configMap": {"name": "bench-code"}}],
                },
            },
        },
    }  # fmt: skip


def wait_pool(name: str, ready: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(kubectl("get", "wp", name, "-o", "json")).get("status") or {}
        if status.get("readyReplicas", 0) >= ready:
            return
        time.sleep(0.5)
    raise RuntimeError(f"pool {name} did not get {ready} ready workers in {timeout:.0f}s")


def delete_pools(*names: str) -> None:
    kubectl("delete", "wp", *names, "--ignore-not-found", "--wait=true")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not kubectl("get", "pods", "-l", "tether.dev/pool", "-o", "name").strip():
            return
        time.sleep(0.5)


def start(workflow: str, input_: Any, pool_name: str | None = None) -> str:
    spec: dict[str, Any] = {"workflowRef": {"name": workflow}, "input": input_}
    if pool_name:
        spec["workerPool"] = pool_name
    run = {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"generateName": f"{workflow}-"},
        "spec": spec,
    }
    return kubectl("create", "-f", "-", "-o", "name", stdin=json.dumps(run)).strip().split("/")[-1]


def start_many(workflow: str, inputs: list[Any]) -> list[str]:
    """Create one run per input with one `kubectl create` (one process, as a user
    applying a file of runs), so the runs start together."""
    items = [
        {
            "apiVersion": "tether.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": {"generateName": f"{workflow}-"},
            "spec": {"workflowRef": {"name": workflow}, "input": input_},
        }
        for input_ in inputs
    ]
    out = kubectl(
        "create",
        "-f",
        "-",
        "-o",
        "name",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    return [line.split("/")[-1] for line in out.split()]


def _instant(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def span_s(statuses: list[dict[str, Any]]) -> float:
    """Seconds from the first activity scheduled to the last one completed, over the
    runs (the status's millisecond times): the runs' work without the Kubernetes
    control path around it (kubectl, the watch that starts a run, status writes)."""
    activities = [a for s in statuses for a in s.get("activities") or ()]
    first = min(_instant(a["scheduledTime"]) for a in activities)
    last = max(_instant(a["completionTime"]) for a in activities)
    return last - first


def wait_runs(names: list[str], timeout: float = 600, poll: float = 0.2) -> dict[str, Any]:
    """name -> status once every run is terminal; raises if one did not succeed."""
    pending, done = set(names), {}
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not finished after {timeout:.0f}s: {sorted(pending)[:5]}")
        items = json.loads(kubectl("get", "wfr", "-o", "json"))["items"]
        for item in items:
            name, status = item["metadata"]["name"], item.get("status") or {}
            if name in pending and status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
                if status["phase"] != "Succeeded":
                    raise RuntimeError(f"run {name} ended {status['phase']}: {status.get('error')}")
                pending.discard(name)
                done[name] = status
        time.sleep(poll)
    return done


def api_writes() -> int:
    """Mutating requests the API server has answered so far (its own metrics)."""
    total = 0
    for line in kubectl("get", "--raw", "/metrics", namespace=None).splitlines():
        if line.startswith("apiserver_request_total{") and any(
            f'verb="{verb}"' in line for verb in WRITE_VERBS
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _leader() -> str:
    """The leading operator pod (the chart runs a standby beside it)."""
    return kubectl(
        "get", "pods", "-l", "tether.dev/leader=true", "-o", "name", namespace=RELEASE_NS
    ).split()[0]


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the API server, etcd and the leading operator."""
    api = kubectl("get", "--raw", "/metrics", namespace=None)
    etcd = subprocess.run(
        ["curl", "-sf", "http://127.0.0.1:23790/metrics"], capture_output=True, text=True
    ).stdout
    stat = kubectl("exec", _leader(), "--", "cat", "/proc/1/stat", namespace=RELEASE_NS)
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")

    def counter(text: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith("process_cpu_seconds_total "))
        return float(line.split()[1])

    return {
        "apiserver": counter(api),
        "etcd": counter(etcd),
        "operator": (int(fields[11]) + int(fields[12])) / ticks,  # utime + stime
    }


def operator_rss_mib() -> float:
    """The leading operator pod's resident memory."""
    status = kubectl("exec", _leader(), "--", "cat", "/proc/1/status", namespace=RELEASE_NS)
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


# ------------------------------------------------------------------ benchmarks


def bench_roundtrip(quick: bool) -> dict[str, Any]:
    n = 200 if quick else 1000
    apply(pool("bench-wf", "workflows", 1), pool("bench-act", "activities", 1))
    try:
        wait_pool("bench-wf", 1)
        wait_pool("bench-act", 1)
        wait_runs([start("bench-roundtrip", {"n": 20})])  # warm up connections and code
        lat: list[float] = []
        for _ in range(n // 200):  # results over 16 KiB live in a ConfigMap, not in status
            (status,) = wait_runs([start("bench-roundtrip", {"n": 200})]).values()
            lat += [s * 1000 for s in status["result"]]
    finally:
        delete_pools("bench-wf", "bench-act")
    dev = devbench.bench_roundtrip(quick)
    p50 = statistics.median(lat)
    return {
        "samples": n,
        "p50_ms": round(p50, 3),
        "p90_ms": round(devbench.pct(lat, 0.90), 3),
        "p99_ms": round(devbench.pct(lat, 0.99), 3),
        "dev_p50_ms": dev["p50_ms"],
        "dev_p99_ms": dev["p99_ms"],
        "ratio_cluster_vs_dev_p50": round(p50 / dev["p50_ms"], 1),
        "target": "p50 <= 10 ms, p99 <= 40 ms",
    }


def bench_throughput(quick: bool) -> dict[str, Any]:
    runs, per_run = (4, 500) if quick else (4, 2500)
    names = [f"bench-tp{i}" for i in range(4)]
    apply(*(pool(name, "all", 1, slots=256) for name in names))
    rates, writes = [], []
    try:
        for name in names:
            wait_pool(name, 1)
        wait_runs([start("bench-fanout", {"n": 200})])
        for _ in range(1 if quick else 3):
            w0, t0 = api_writes(), time.perf_counter()
            wait_runs([start("bench-fanout", {"n": per_run}) for _ in range(runs)])
            elapsed = time.perf_counter() - t0
            rates.append(runs * per_run / elapsed)
            writes.append((api_writes() - w0) / elapsed)
    finally:
        delete_pools(*names)
    return {
        "worker_pods": 4,
        "activities_per_sample": runs * per_run,
        "samples": len(rates),
        "activities_per_s_median": round(statistics.median(rates)),
        "api_writes_per_s_median": round(statistics.median(writes)),
        "target": ">= 500 activities/s, durable",
    }


def _pod_per_activity(key: str, predictions: int) -> tuple[float, int]:
    """Argo's way: every activity its own pod of the same image. (wall s, model loads)"""
    step = (
        "import asyncio, json, sys; sys.path.insert(0, '/opt/bench'); "
        "from bench import workloads as w; "
        "print(json.dumps(asyncio.run(w.{call})))"
    )
    calls = [f"load_model.fn('{key}')"] + [
        f"predict.fn('{key}', {float(i)})" for i in range(predictions)
    ]
    loads = 0
    t0 = time.perf_counter()
    for i, call in enumerate(calls):
        name = f"{key}-step{i}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"bench": "pod-per-activity"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "step", "image": IMAGE,
                    "command": ["python", "-c", step.format(call=call)],
                    "volumeMounts": [{"name": "code", "mountPath": "/opt/bench/bench"}],
                }],
                "volumes": [{"name": "code", "configMap": {"name": "bench-code"}}],
            },
        }  # fmt: skip
        apply(pod)
        kubectl("wait", f"pod/{name}", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s")
        out = json.loads(kubectl("logs", name).strip().splitlines()[-1])
        loads += int(out if isinstance(out, bool) else out["loaded"])
    wall = time.perf_counter() - t0
    kubectl("delete", "pods", "-l", "bench=pod-per-activity", "--wait=false")
    return wall, loads


def bench_ml(quick: bool) -> dict[str, Any]:
    predictions = 20
    out: dict[str, Any] = {
        "workload": f"one run: 1 s model load, then {predictions} x 50 ms predictions",
        "ideal_s": round(1.0 + predictions * 0.05, 2),
    }
    apply(pool("bench-ml", "all", 4, slots=8, capacity=2))
    try:
        wait_pool("bench-ml", 4)
        for mode in ("sticky", "plain"):
            walls, spans, loads = [], [], []
            for sample in range(1 if quick else 3):
                t0 = time.perf_counter()
                key = f"{mode}-{sample}-{int(time.time())}"
                (status,) = wait_runs(
                    [start(f"bench-inference-{mode}", {"key": key, "n": predictions})], poll=0.05
                ).values()
                walls.append(time.perf_counter() - t0)
                spans.append(span_s([status]))
                loads.append(status["result"])
            out[f"{mode}_wall_s_median"] = round(statistics.median(walls), 2)
            out[f"{mode}_span_s_median"] = round(statistics.median(spans), 2)
            out[f"{mode}_span_of_ideal_pct"] = round(
                100 * out["ideal_s"] / statistics.median(spans)
            )
            out[f"{mode}_model_loads_median"] = statistics.median(loads)
    finally:
        delete_pools("bench-ml")
    walls, loads = [], []
    for sample in range(1 if quick else 2):
        wall, loaded = _pod_per_activity(f"ppa{sample}-{int(time.time())}", predictions)
        walls.append(wall)
        loads.append(loaded)
    out["pod_per_activity_wall_s_median"] = round(statistics.median(walls), 2)
    out["pod_per_activity_model_loads_median"] = statistics.median(loads)
    sticky = out["sticky_wall_s_median"]
    out["ratio_plain_vs_sticky"] = round(out["plain_wall_s_median"] / sticky, 2)
    out["ratio_pod_per_activity_vs_sticky"] = round(
        out["pod_per_activity_wall_s_median"] / sticky, 2
    )
    return out


def bench_ml_concurrent(quick: bool) -> dict[str, Any]:
    """The ML workload under contention: 8 runs at once on 4 pods (2 sessions each)."""
    runs, predictions = 8, 20
    out: dict[str, Any] = {
        "runs_at_once": runs,
        "worker_pods": 4,
        "predictions_per_run": 20,
        "ideal_s": round(1.0 + predictions * 0.05, 2),
    }
    apply(pool("bench-mlc", "all", 4, slots=8, capacity=2))
    try:
        wait_pool("bench-mlc", 4)
        for mode in ("sticky", "plain"):
            walls, spans, loads = [], [], []
            for sample in range(1 if quick else 3):
                t0 = time.perf_counter()
                stamp = f"{mode}-{sample}-{int(time.time())}"
                inputs = [{"key": f"{stamp}-{k}", "n": predictions} for k in range(runs)]
                names = start_many(f"bench-inference-{mode}", inputs)
                statuses = wait_runs(names, poll=0.1)
                walls.append(time.perf_counter() - t0)
                spans.append(span_s(list(statuses.values())))
                loads.append(sum(s["result"] for s in statuses.values()))
            out[f"{mode}_wall_s_median"] = round(statistics.median(walls), 2)
            out[f"{mode}_span_s_median"] = round(statistics.median(spans), 2)
            out[f"{mode}_span_of_ideal_pct"] = round(
                100 * out["ideal_s"] / statistics.median(spans)
            )
            out[f"{mode}_model_loads_median"] = statistics.median(loads)
    finally:
        delete_pools("bench-mlc")
    out["ratio_plain_vs_sticky"] = round(
        out["plain_wall_s_median"] / out["sticky_wall_s_median"], 2
    )
    return out


def bench_scale(quick: bool) -> dict[str, Any]:
    """Operator memory with many finished runs; status size of a 1,000-activity run."""
    finished = 200 if quick else 1000
    apply(pool("bench-scale", "all", 2, slots=256))
    try:
        wait_pool("bench-scale", 2)
        rss_before = operator_rss_mib()
        names: list[str] = []
        for _ in range(finished):
            names.append(start("bench-roundtrip", {"n": 1}))
        wait_runs(names, timeout=1200, poll=1.0)
        rss_after = operator_rss_mib()
        name = start("bench-fanout", {"n": 1000})
        wait_runs([name])
        as_json = kubectl("get", "wfr", name, "-o", "json")
        as_yaml = kubectl("get", "wfr", name, "-o", "yaml")
        owned = json.loads(
            kubectl("get", "configmaps", "-l", f"tether.dev/run={name}", "-o", "json")
        )
        sizes = [len(json.dumps(cm)) for cm in owned["items"]]
    finally:
        delete_pools("bench-scale")
        kubectl("delete", "wfr", "--all", "--wait=false")
    return {
        "finished_runs": finished,
        "operator_rss_mib_before": rss_before,
        "operator_rss_mib_after": rss_after,
        "status_1000_activities_bytes_json": len(as_json),
        "status_1000_activities_yaml_lines": len(as_yaml.splitlines()),
        "owned_configmaps": len(sizes),
        "largest_owned_configmap_bytes": max(sizes) if sizes else 0,
    }


OPEN_RUNS_LANES = 16
"""Creates in flight at once while opening runs (a client applying runs in parallel)."""


async def _create_runs(workflow: str, count: int, input_: Any) -> dict[str, float]:
    """Create `count` runs of `workflow` through the API, `OPEN_RUNS_LANES` at a time:
    each run's name and when its create returned."""
    client = KubeClient(load_config(), user_agent="tether-bench/open-runs")
    created: dict[str, float] = {}
    todo = iter(range(count))

    async def lane() -> None:
        for _ in todo:
            body = {
                "apiVersion": "tether.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": f"{workflow}-"},
                "spec": {"workflowRef": {"name": workflow}, "input": input_},
            }
            made = await client.create(paths.workflow_runs(NAMESPACE), body)
            created[made["metadata"]["name"]] = time.time()

    try:
        await asyncio.gather(*(lane() for _ in range(OPEN_RUNS_LANES)))
    finally:
        await client.aclose()
    return created


class PhaseWatch:
    """`kubectl get wfr --watch` in the benchmark namespace, from before the runs exist:
    when each run was first seen in each phase. One watch, so neither polling nor
    kubectl's client-side rate limit (5 requests/s) delays what it sees."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, float]] = {}
        self._proc = subprocess.Popen(
            [
                "kubectl", "-n", NAMESPACE, "get", "wfr", "--watch", "--output-watch-events",
                "-o", "jsonpath={.type} {.object.metadata.name} {.object.status.phase}{'\\n'}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            _, name, *phase = line.split()
            if phase:
                self.seen.setdefault(phase[0], {}).setdefault(name, time.time())

    def when(self, phase: str) -> dict[str, float]:
        return dict(self.seen.get(phase, {}))

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


class AddedWatch:
    """`kubectl get RESOURCE --watch` in the benchmark namespace: when each object was
    first seen (the client's clock, one watch per kind, so both kinds are seen alike)."""

    def __init__(self, resource: str) -> None:
        self.seen: dict[str, float] = {}
        self._proc = subprocess.Popen(
            ["kubectl", "-n", NAMESPACE, "get", resource, "--watch", "--output-watch-events",
             "-o", "jsonpath={.type} {.object.metadata.name}{'\\n'}"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            kind, _, name = line.strip().partition(" ")
            if kind == "ADDED":
                self.seen.setdefault(name, time.time())

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def _slot_delays_ms(seen: dict[str, float], prefix: str) -> list[float]:
    """For each object named `<prefix>-<minute since the epoch>` (a CronJob's Jobs and a
    WorkflowSchedule's runs both are): ms from that minute to when the watch saw it."""
    return sorted(
        round(1000 * (at - 60 * int(name.removeprefix(f"{prefix}-"))), 1)
        for name, at in seen.items()
        if name.startswith(f"{prefix}-") and name.removeprefix(f"{prefix}-").isdigit()
    )


def bench_schedules(quick: bool) -> dict[str, Any]:
    """A WorkflowSchedule and a CronJob, both `* * * * *`, side by side over the same
    minutes: the delay from each minute to its WorkflowRun, and to the CronJob's Job, as
    one watch per kind sees them appear."""
    minutes = 2 if quick else 5
    apply(pool("bench-sched", "workflows", 1))
    wait_pool("bench-sched", 1)
    runs, jobs = AddedWatch("wfr"), AddedWatch("jobs")
    try:
        apply(
            {
                "apiVersion": "tether.dev/v1alpha1",
                "kind": "WorkflowSchedule",
                "metadata": {"name": "every-minute"},
                "spec": {
                    "schedules": ["* * * * *"],
                    "workflowRef": {"name": "bench-timer"},
                    "input": {"seconds": 0.1},
                },
            },
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "every-minute"},
                "spec": {
                    "schedule": "* * * * *",
                    "jobTemplate": {"spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "tick", "image": IMAGE,
                                        "imagePullPolicy": "IfNotPresent",
                                        "command": ["true"]}],
                    }}}},
                },
            },
        )  # fmt: skip
        first = (int(time.time()) // 60 + 1) * 60
        time.sleep(max(0.0, first + 60 * (minutes - 1) + 15 - time.time()))
    finally:
        runs.stop()
        jobs.stop()
        kubectl("delete", "wfs,cronjob", "every-minute", "--ignore-not-found")
        kubectl("delete", "wfr,jobs", "--all", "--wait=false")
        delete_pools("bench-sched")
    run_ms = _slot_delays_ms(runs.seen, "every-minute")
    job_ms = _slot_delays_ms(jobs.seen, "every-minute")
    if not run_ms or not job_ms:
        raise RuntimeError(f"no slots seen: runs {run_ms}, jobs {job_ms}")

    def pct(values: list[float], p: int) -> float:
        return values[min(len(values) - 1, len(values) * p // 100)]

    return {
        "minutes": minutes,
        "workflowschedule_slot_to_run_ms": run_ms,
        "workflowschedule_p50_ms": pct(run_ms, 50),
        "workflowschedule_p99_ms": pct(run_ms, 99),
        "cronjob_slot_to_job_ms": job_ms,
        "cronjob_p50_ms": pct(job_ms, 50),
        "cronjob_p99_ms": pct(job_ms, 99),
        "ratio_cronjob_vs_schedule_p50": round(pct(job_ms, 50) / max(pct(run_ms, 50), 0.1), 1),
        "target": "a run within a second of its time; no slower than a CronJob's Job",
    }


def _phases() -> dict[str, int]:
    """How many runs of the benchmark namespace are in each phase."""
    out = kubectl("get", "wfr", "-o", "jsonpath={range .items[*]}{.status.phase}{'\\n'}{end}")
    counts: dict[str, int] = {}
    for phase in out.split("\n"):
        counts[phase or "-"] = counts.get(phase or "-", 0) + 1
    return counts


def bench_open_runs(quick: bool) -> dict[str, Any]:
    """Many runs open at once, each waiting on an hour's durable timer: how fast the
    operator starts them (created through the API, 16 at a time, until a watch has seen
    every one Running) and its memory once they all wait."""
    count = 1000 if quick else 10_000
    apply(pool("bench-open", "workflows", 2, slots=256))
    watch = PhaseWatch()
    try:
        wait_pool("bench-open", 2)
        rss_before = operator_rss_mib()
        cpu_before = cpu_seconds()
        t0 = time.time()
        created = asyncio.run(_create_runs("bench-timer", count, {"seconds": 3600}))
        created_s = time.time() - t0
        deadline = time.monotonic() + 1800
        while len(running := watch.when("Running")) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} runs not all Running: {_phases()}")
            if failed := watch.when("Failed"):
                raise RuntimeError(f"{len(failed)} runs failed, e.g. {next(iter(failed))}")
            time.sleep(0.2)
        running_s = max(running.values()) - t0
        cpu = {k: v - cpu_before[k] for k, v in cpu_seconds().items()}
        lags = sorted(running[name] - done for name, done in created.items())
        time.sleep(10)  # settled: what the operator keeps for runs that wait
        rss_after = operator_rss_mib()
        objects = len(kubectl("get", "configmaps", "-o", "name").split())
    finally:
        watch.stop()
        kubectl("delete", "wfr", "--all", "--wait=false")
        delete_pools("bench-open")
    return {
        "open_runs": len(created),
        "create_s": round(created_s, 1),
        "create_rate_runs_per_s": round(count / created_s),
        "all_running_s": round(running_s, 1),
        "start_rate_runs_per_s": round(count / running_s),
        "created_to_running_p50_s": round(lags[len(lags) // 2], 2),
        "created_to_running_p99_s": round(lags[len(lags) * 99 // 100], 2),
        "created_to_running_max_s": round(lags[-1], 2),
        "operator_rss_mib_before": rss_before,
        "operator_rss_mib_open": rss_after,
        "configmaps_in_namespace": objects,
        **{f"{k}_cpu_ms_per_start": round(1000 * v / count, 2) for k, v in cpu.items()},
        "target": "PG: start >= 200 runs/s, RSS <= 1 GiB (API server tier: recorded)",
    }


BENCHES = {
    "roundtrip": bench_roundtrip,
    "throughput": bench_throughput,
    "ml": bench_ml,
    "ml_concurrent": bench_ml_concurrent,
    "scale": bench_scale,
    "open_runs": bench_open_runs,
    "schedules": bench_schedules,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    parser.add_argument("--out", help="results path without suffix (bench/results/cluster-STORE)")
    parser.add_argument("--store", choices=["apiserver", "postgres"], default="apiserver")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        "kind cluster (hack/kind-up): a control plane and 2 worker nodes on this host",
        "store": args.store,
        "benches": {},
    }
    installed = install(args.store)
    try:
        run_benches(args.only or list(BENCHES), BENCHES, args.quick, results["benches"])
    finally:
        uninstall(release_too=installed, store=args.store)
    out = Path(args.out or RESULTS / f"cluster-{args.store}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(devbench.render(results) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
