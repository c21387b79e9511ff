"""The words e2e scenarios are written in: a pool serving a workflow file, a run that
is waited on, a pod killed. A test reads as its story; what kubectl does is here.

    pool = serve(ns, "rolling", "sticky_steps.py", replicas=2).ready(2)
    run = steps(ns, "rolling", count=30, seconds=0.5)
    pool.kill()
    assert run.wait().phase == "Succeeded"
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.kube import API_VERSION, Kube, KubectlError, Obj, eventually, running_and_ready
from tests.e2e.testdata_pools import create_run, script_pool, start_steps

TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})


@dataclass(frozen=True)
class Run:
    """A WorkflowRun of one scenario."""

    ns: Kube
    name: str
    tag: str = ""
    """What its steps print in their log lines (runs of `testdata/steps.py` and kin)."""

    @property
    def phase(self) -> str:
        return self.ns.jsonpath("wfr", self.name, "{.status.phase}")

    @property
    def status(self) -> Obj:
        """Its status (empty before the operator writes one)."""
        return dict(self.ns.get("wfr", self.name).get("status") or {})

    @property
    def activities(self) -> list[Obj]:
        """Its activities as its status lists them (`status.activities`)."""
        return list(self.status.get("activities") or [])

    @property
    def result(self) -> Any:
        """Its result (`status.result`: any JSON, a string too)."""
        return self.status.get("result")

    @property
    def done(self) -> int:
        """How many of its activities are done (`status.progress`)."""
        progress = self.ns.jsonpath("wfr", self.name, "{.status.progress}") or "0/0"
        return int(progress.split("/")[0])

    def reaches(self, phase: str, timeout: float = 60) -> Run:
        """Wait until the run is in `phase` (not necessarily its last)."""
        eventually(lambda: self.phase == phase, timeout=timeout, what=f"{self.name} {phase}")
        return self

    def wait(self, timeout: float = 240) -> Run:
        """Wait until the run ended; fail with its post-mortem if it does not."""
        try:
            eventually(lambda: self.phase in TERMINAL, timeout=timeout, what=f"{self.name} ends")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.ns.run_post_mortem(self.name)}") from None
        return self


def restarts(pod: Obj) -> int:
    """How often pod `pod`'s containers restarted."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(c.get("restartCount") or 0) for c in statuses)


@dataclass(frozen=True)
class Pool:
    """A WorkerPool of one scenario, serving the workflow of its own name (unless `serve`
    was given the Workflows)."""

    ns: Kube
    name: str

    def pods(self, *, terminating: bool = False) -> list[Obj]:
        """Its pods, those being deleted left out unless `terminating`."""
        found = self.ns.pods(f"tether.dev/pool={self.name}")
        return [p for p in found if terminating or not p["metadata"].get("deletionTimestamp")]

    def executions(self, run: Run, what: str = "executed") -> Counter[int]:
        """How many times each step of `run` was `what` (started, or executed to its
        end), by the logs of the pool's pods (a deleted pod takes its log with it)."""
        pattern = re.compile(rf"tether-e2e {what} tag={run.tag} step=(\d+)")
        counts: Counter[int] = Counter()
        for pod in self.pods(terminating=True):
            counts.update(int(m) for m in pattern.findall(self.log(pod)))
        return counts

    def log(self, pod: Obj, *flags: str) -> str:
        """Pod `pod`'s worker log, the container's previous run first when it restarted
        (`kubectl logs` alone shows only the current one)."""
        name = pod["metadata"]["name"]
        earlier = ""
        if restarts(pod):
            with contextlib.suppress(KubectlError):  # kubelet keeps one previous log
                earlier = self.ns.run("logs", name, "--previous", *flags)
        return earlier + self.ns.run("logs", name, *flags)

    def restarts(self) -> dict[str, int]:
        """Per pod, how often its worker container restarted."""
        return {p["metadata"]["name"]: restarts(p) for p in self.pods(terminating=True)}

    def ready(self, count: int, timeout: float = 120) -> Pool:
        """Wait until exactly `count` of its pods run and are ready."""
        eventually(
            lambda: sum(running_and_ready(p) for p in self.pods()) == count == len(self.pods()),
            timeout=timeout,
            what=f"{count} ready pods of {self.name}",
        )
        return self

    def ready_pod(self, timeout: float = 120) -> str:
        """Wait until it has one pod, running and ready; the pod's name."""

        def one() -> str | None:
            pods = self.pods()
            ready = len(pods) == 1 and running_and_ready(pods[0])
            return str(pods[0]["metadata"]["name"]) if ready else None

        return str(eventually(one, timeout=timeout, what=f"the ready pod of {self.name}"))

    def metric(self, pod: str, name: str, **labels: str) -> float:
        """Sample `name{labels}` of worker pod `pod`'s `/metrics` (port `tether-metrics`,
        through the API server's pod proxy); 0 if absent."""
        path = f"/api/v1/namespaces/{self.ns.namespace}/pods/{pod}:9091/proxy/metrics"
        for family in text_string_to_metric_families(self.ns.run("get", "--raw", path)):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def kill(self, pod: str | None = None) -> str:
        """Delete `pod` (else its first pod) without waiting; the pod's name."""
        name = pod or self.pods()[0]["metadata"]["name"]
        try:
            self.ns.run("delete", "pod", name, "--wait=false")
        except KubectlError as exc:
            if "NotFound" not in str(exc):
                raise
        return name

    def remove(self) -> None:
        """Delete the pool and its Workflow."""
        self.ns.delete("wp", self.name)
        self.ns.delete("wf", self.name)


def serve(ns: Kube, name: str, script: str, *workflows: Obj, **spec: Any) -> Pool:
    """Apply WorkerPool `name` running `testdata/<script>`, whose workflow it registers
    as `name`, and Workflow `name` naming the pool; or, given `workflows`, those
    Workflows instead (see `workflow`), and the file registers its own names."""
    if workflows:
        ns.apply(*script_pool(name, script, **spec), *workflows)
    else:
        ns.apply(*script_pool(name, script, workflow=name, **spec))
    return Pool(ns, name)


def workflow(name: str, pool: str | None = None, **spec: Any) -> Obj:
    """Workflow `name` naming WorkerPool `pool` (none: any worker of the namespace that
    registered it), with the rest of `spec` (e.g. `retry`)."""
    if pool is not None:
        spec = {"workerPool": pool, **spec}
    obj: Obj = {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": {"name": name}}
    return {**obj, "spec": spec} if spec else obj


def run(ns: Kube, workflow: str, *, name: str | None = None, **spec: Any) -> Run:
    """Create a WorkflowRun of `workflow` (`input` and the rest of `spec` as given),
    named `name` when other calls name it (else a generated name)."""
    return Run(ns, create_run(ns, workflow, name=name, **spec))


def steps(
    ns: Kube, workflow: str, count: int, seconds: float = 0.0, sticky: bool | None = None
) -> Run:
    """Start a run of a `steps.py` or `sticky_steps.py` workflow: `count` steps of
    `seconds` each (in one session when `sticky`)."""
    name, tag = start_steps(ns, workflow, count, seconds, sticky)
    return Run(ns, name, tag)
