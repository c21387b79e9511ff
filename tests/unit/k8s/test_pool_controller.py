"""The WorkerPool controller's reconcile, with the real scheduler service and engine.

The API server side is a small in-memory stand-in behind `KubeClient`'s httpx
transport (the seam we own): it stores pods and records every write, so the tests
read what the controller asked for and in which order. The real apiserver is in
tests/e2e/test_pools.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tether_operator.engine import EngineConfig
from tether_operator.k8s.client import KubeClient, KubeConfig
from tether_operator.k8s.pods import POOL_LABEL
from tether_operator.k8s.pools import PoolController
from tether_operator.scheduler import SchedulerService
from worker_runtime.protocol import RegisterWorkerRequest, StartRunRequest

NS, POOL = "ml", "gpu"
KEY = (NS, POOL)
POOL_ID = f"{NS}.{POOL}"


@dataclass
class ApiServer:
    """Pods and WorkerPools in memory; `writes` lists (method, path, body) of every
    request but a pod listing, in order."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    refuse_pods: str = ""
    alive_at_delete: dict[str, bool] = field(default_factory=dict)
    service: SchedulerService | None = None
    pool: dict[str, Any] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        if request.method == "GET" and path.endswith("/pods"):
            return httpx.Response(200, json={"items": list(self.pods.values()), "metadata": {}})
        self.writes.append((request.method, path, body))
        if request.method == "POST" and path.endswith("/pods"):
            if self.refuse_pods:
                status = {"kind": "Status", "reason": "Invalid", "message": self.refuse_pods}
                return httpx.Response(422, json=status)
            pod = {
                **body,
                "metadata": {
                    **body["metadata"],
                    "uid": f"uid-{body['metadata']['name']}",
                    "creationTimestamp": f"2026-01-01T00:00:{len(self.pods):02d}Z",
                },
            }
            self.pods[pod["metadata"]["name"]] = pod
            return httpx.Response(201, json=pod)
        if request.method == "DELETE":
            name = path.rsplit("/", 1)[1]
            if self.service is not None:
                w = self.service.engine.workers.get(name)
                self.alive_at_delete[name] = w is not None and w.alive
            self.pods.pop(name, None)
            return httpx.Response(200, json={"kind": "Status"})
        if request.method == "PATCH" and "/pods/" in path:
            pod = self.pods[path.rsplit("/", 1)[1]]
            pod["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
            return httpx.Response(200, json=pod)
        if request.method == "PATCH" and path.endswith(f"/workerpools/{POOL}"):
            self.pool["spec"].update(body["spec"])
            return httpx.Response(200, json=self.pool)
        if request.method == "PATCH":
            return httpx.Response(200, json=body)
        return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})

    def created(self) -> list[str]:
        return [b["metadata"]["name"] for m, p, b in self.writes if m == "POST"]

    def deleted(self) -> list[str]:
        return [p.rsplit("/", 1)[1] for m, p, _ in self.writes if m == "DELETE"]

    def statuses(self) -> list[dict[str, Any]]:
        return [b["status"] for m, p, b in self.writes if m == "PATCH" and p.endswith("/status")]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def service() -> AsyncIterator[SchedulerService]:
    svc = SchedulerService(EngineConfig(require_registered_workflows=False))
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def api(service: SchedulerService) -> ApiServer:
    return ApiServer(service=service)


@pytest.fixture
async def client(api: ApiServer) -> AsyncIterator[KubeClient]:
    kube = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(api.handle))
    yield kube
    await kube.aclose()


def controller(
    service: SchedulerService, client: KubeClient, clock: Clock, **kw: Any
) -> PoolController:
    kw.setdefault("scheduler_url", "http://scheduler:7233")
    kw.setdefault("startup_grace", 0.0)
    return PoolController(service, client, clock=clock, **kw)


def pool_body(**spec: Any) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "worker", "image": "tether:dev"}]}}
    return {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL, "namespace": NS, "uid": "pool-uid", "generation": 2},
        "spec": {"template": template, **spec},
    }


def register(service: SchedulerService, name: str) -> None:
    service.register_worker(
        RegisterWorkerRequest(
            worker_id=name,
            pod=name,
            incarnation="1",
            pool=POOL_ID,
            workflows=[{"name": "wf"}],
            activities=[{"name": "a"}],
        )
    )


async def settle(ctl: PoolController, api: ApiServer) -> None:
    """Feed the controller the pods the API server holds (as the watch would), reconcile."""
    for pod in list(api.pods.values()):
        await ctl.on_pod_event("MODIFIED", pod)
    await ctl.reconcile(KEY)


async def test_pods_are_created_up_to_replicas_and_the_status_says_so(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=2))
    await ctl.reconcile(KEY)
    assert len(api.created()) == 2
    assert all(n.startswith("gpu-") for n in api.created())
    for name in api.created():
        register(service, name)
    await settle(ctl, api)
    assert len(api.created()) == 2  # level-based: nothing more to do
    status = api.statuses()[-1]
    assert (status["replicas"], status["readyReplicas"], status["busy"]) == (2, 2, 0)
    assert status["selector"] == f"{POOL_LABEL}={POOL}"
    assert status["observedGeneration"] == 2
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "PodsReady",
        2,
    )
    writes = len(api.writes)
    await settle(ctl, api)
    assert len(api.writes) == writes  # an unchanged status is not written again


async def test_a_restarted_controller_counts_pods_the_watch_has_not_delivered_yet(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    first = controller(service, client, Clock())
    await first.on_pool_event(None, pool_body(replicas=1))
    await first.reconcile(KEY)
    (pod,) = api.created()
    restarted = controller(service, client, Clock())
    await restarted.on_pool_event(None, pool_body(replicas=1))  # its pod events come later
    await restarted.reconcile(KEY)
    assert api.created() == [pod]


async def test_scale_down_reports_the_idle_pod_lost_before_deleting_it(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=2))
    await ctl.reconcile(KEY)
    first, second = api.created()
    for name in (first, second):
        register(service, name)
    service.start_run(StartRunRequest(workflow="wf", worker_pool=POOL_ID))
    busy = next(w for w in service.engine.workers.values() if w.workflow_tasks).worker_id
    idle = first if busy == second else second
    await settle(ctl, api)
    assert (
        api.pods[busy]["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
        == "10"
    )
    await ctl.on_pool_event("MODIFIED", pool_body(replicas=1))
    await settle(ctl, api)
    assert api.deleted() == [idle]
    assert api.alive_at_delete == {idle: False}  # the scheduler knew before the pod went
    assert service.engine.workers[idle].lost_reason == "ScaledDown"
    assert service.engine.workers[busy].alive


async def test_no_scale_down_while_workers_may_still_be_re_registering(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    clock = Clock()
    ctl = controller(service, client, clock, startup_grace=10.0)
    for name in ("gpu-aaaaa", "gpu-bbbbb"):
        api.pods[name] = {
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": name,
                "labels": {POOL_LABEL: POOL},
                "ownerReferences": [{"controller": True, "uid": "pool-uid"}],
            },
            "status": {"phase": "Running"},
        }
    stray = {"metadata": {"name": "stray", "namespace": NS, "labels": {POOL_LABEL: POOL}}}
    api.pods["stray"] = stray  # labelled, but not the pool's: never counted or deleted
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await settle(ctl, api)
    assert api.deleted() == []
    clock.now += 10
    await settle(ctl, api)
    assert len(api.deleted()) == 1
    assert "stray" not in api.deleted()


async def test_a_pod_that_ended_is_reported_deleted_and_replaced_with_backoff(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    clock = Clock()
    ctl = controller(service, client, clock)
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (first,) = api.created()
    register(service, first)
    api.pods[first]["status"] = {"phase": "Failed"}
    await settle(ctl, api)
    assert service.engine.workers[first].lost_reason == "PodDeleted"
    assert api.deleted() == [first]
    assert len(api.created()) == 1  # the first failure waits a second
    waiting = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["ReplicaFailure"]
    assert "1 pod(s) in a row ended before their worker registered" in waiting["message"]
    clock.now += 1
    await settle(ctl, api)
    (_, second) = api.created()
    api.pods[second]["status"] = {"phase": "Failed"}
    await settle(ctl, api)
    clock.now += 1
    await settle(ctl, api)
    assert len(api.created()) == 2  # the second waits two
    clock.now += 1
    await settle(ctl, api)
    assert len(api.created()) == 3
    conditions = {c["type"]: c for c in api.statuses()[-1]["conditions"]}
    assert "ReplicaFailure" not in conditions


async def test_a_pod_deleted_by_someone_else_breaks_its_sessions_at_once(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (pod,) = api.created()
    register(service, pod)
    gone = {**api.pods[pod], "metadata": {**api.pods[pod]["metadata"], "deletionTimestamp": "x"}}
    await ctl.on_pod_event("MODIFIED", gone)
    assert service.engine.workers[pod].lost_reason == "PodDeleted"
    assert service.engine.workers[pod].draining, "its running attempts may finish"
    evicted = dict(gone, status={"phase": "Failed", "reason": "Evicted"})
    await ctl.on_pod_event("MODIFIED", evicted)  # already lost for good: said once
    assert service.engine.workers[pod].lost_reason == "PodDeleted"


async def test_pods_the_api_server_refuses_and_a_missing_scheduler_url_show_in_the_status(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock(), scheduler_url="")
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    assert api.created() == []
    failure = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["ReplicaFailure"]
    assert "TETHER_SCHEDULER_URL" in failure["message"]
    ctl.scheduler_url = "http://scheduler:7233"
    api.refuse_pods = 'Pod "gpu-x" is invalid: spec.containers[0].image: Required value'
    await ctl.reconcile(KEY)
    failure = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["ReplicaFailure"]
    assert (failure["status"], failure["reason"]) == ("True", "FailedCreate")
    assert "spec.containers[0].image" in failure["message"]


async def test_autoscale_writes_spec_replicas_from_demand(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    clock = Clock()
    waiting = {POOL_ID: 0}
    ctl = controller(service, client, clock, waiting=lambda: waiting)
    api.pool = pool_body(replicas=0, autoscale=True, maxReplicas=3, idleTimeout="30s")
    await ctl.on_pool_event(None, api.pool)
    await ctl.reconcile(KEY)
    assert api.created() == []
    waiting[POOL_ID] = 1  # a WorkflowRun waits for its workflow to be registered
    await ctl.reconcile(KEY)
    replicas = [b["spec"]["replicas"] for m, p, b in api.writes if m == "PATCH" and "spec" in b]
    assert replicas == [1]
    assert len(api.created()) == 1
    waiting[POOL_ID] = 0
    (pod,) = api.created()
    register(service, pod)
    await settle(ctl, api)
    clock.now += 29
    await settle(ctl, api)
    assert api.deleted() == []
    clock.now += 1
    await settle(ctl, api)
    assert api.deleted() == [pod]  # idle for idleTimeout: back to zero
    assert api.pool["spec"]["replicas"] == 0
