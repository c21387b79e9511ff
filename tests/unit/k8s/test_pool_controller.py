"""The WorkerPool controller's reconcile, with the real scheduler service and engine.

The API server side is a small in-memory stand-in behind `KubeClient`'s httpx
transport (the seam we own): it stores pods and records every write, so the tests
read what the controller asked for and in which order. The scheduler service is the
real one, recording what the controller reported about workers (`Service.reports`).
The real apiserver is in tests/e2e/test_pools.py and tests/e2e/test_sessions_k8s.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tether_operator.engine import EngineConfig
from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.k8s.pools.controller import PoolController
from tether_operator.k8s.pools.pods import (
    DELETION_COST,
    SESSIONS_ANNOTATION,
    STICKY_LABEL,
    TEMPLATE_HASH,
)
from tether_operator.k8s.resources.naming import POOL_LABEL
from tether_operator.scheduler import SchedulerService
from worker_runtime.protocol import RegisterWorkerRequest, StartRunRequest

NS, POOL = "ml", "gpu"
KEY = (NS, POOL)
POOL_ID = f"{NS}.{POOL}"


class Service(SchedulerService):
    """The scheduler service, recording each worker report: (what, worker, reason, message)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports: list[tuple[str, str, str, str]] = []
        self._inside = False

    def worker_draining(self, worker_id: str, reason: str, message: str = "") -> None:
        self.reports.append(("draining", worker_id, reason, message))
        self._inside = True  # the service may implement draining with worker_lost
        try:
            super().worker_draining(worker_id, reason, message)
        finally:
            self._inside = False

    def worker_lost(self, worker_id: str, reason: str = "ProcessExited", message: str = "") -> None:
        if not self._inside:
            self.reports.append(("lost", worker_id, reason, message))
        super().worker_lost(worker_id, reason, message)


@dataclass
class ApiServer:
    """Pods and WorkerPools in memory; `writes` lists (method, path, body) of every
    request but a pod listing, in order."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    refuse_pods: str = ""
    reported_at_delete: dict[str, list[tuple[str, str, str, str]]] = field(default_factory=dict)
    service: Service | None = None
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
                self.reported_at_delete[name] = list(self.service.reports)
            self.pods.pop(name, None)
            return httpx.Response(200, json={"kind": "Status"})
        if request.method == "PATCH" and "/pods/" in path:
            pod = self.pods[path.rsplit("/", 1)[1]]
            for section, changes in body["metadata"].items():  # a JSON merge patch
                current = pod["metadata"].setdefault(section, {})
                for k, v in changes.items():
                    if v is None:
                        current.pop(k, None)
                    else:
                        current[k] = v
            return httpx.Response(200, json=json.loads(json.dumps(pod)))
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
async def service() -> AsyncIterator[Service]:
    svc = Service(EngineConfig(require_registered_workflows=False))
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def api(service: Service) -> ApiServer:
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


def register(
    service: SchedulerService, name: str, *, node: str = "", sticky: str | None = None
) -> RegisterWorkerRequest:
    req = RegisterWorkerRequest(
        worker_id=name,
        pod=name,
        node=node,
        incarnation="1",
        pool=POOL_ID,
        workflows=[{"name": "wf", "sticky": sticky}],
        activities=[{"name": "a", "options": {"start_to_close_timeout": 300}}],
    )
    service.register_worker(req)
    return req


def on_node(api: ApiServer, name: str, node: str) -> None:
    """The scheduler put pod `name` on `node`."""
    api.pods[name]["spec"]["nodeName"] = node


def with_meta(pod: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {**pod, "metadata": {**pod["metadata"], **meta}}


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
    # The scheduler knew before the pod went.
    assert api.reported_at_delete[idle] == [
        ("draining", idle, "ScaledDown", f"pod {idle} was removed: pool {POOL} scaled down")
    ]
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


async def test_a_pod_deleted_by_someone_else_drains_at_once_and_is_lost_when_gone(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (pod,) = api.created()
    register(service, pod, node="worker-a")
    on_node(api, pod, "worker-a")
    gone = with_meta(api.pods[pod], deletionTimestamp="2026-01-01T00:01:00Z")
    await ctl.on_pod_event("MODIFIED", gone)
    said = f"pod {pod} on node worker-a was deleted"
    assert service.reports == [("draining", pod, "PodDeleted", said)]  # in the handler
    assert service.engine.workers[pod].lost_reason == "PodDeleted"
    assert service.engine.workers[pod].draining, "its running attempts may finish"
    await ctl.on_pod_event("MODIFIED", gone)
    await ctl.reconcile(KEY)
    assert len(service.reports) == 1  # said once
    await ctl.on_pod_event("DELETED", gone)
    assert service.reports[1:] == [("lost", pod, "PodDeleted", said)]


async def test_evictions_are_reported_evicted(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=2))
    await ctl.reconcile(KEY)
    by_api, by_kubelet = api.created()
    for name in (by_api, by_kubelet):
        register(service, name, node="worker-b")
        on_node(api, name, "worker-b")
    disruption = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    evicting = with_meta(api.pods[by_api], deletionTimestamp="2026-01-01T00:01:00Z")
    evicting["status"] = {"phase": "Running", "conditions": [disruption]}
    await ctl.on_pod_event("MODIFIED", evicting)
    ended = dict(api.pods[by_kubelet], status={"phase": "Failed", "reason": "Evicted"})
    await ctl.on_pod_event("MODIFIED", ended)
    assert service.reports == [
        ("draining", by_api, "Evicted", f"pod {by_api} on node worker-b was evicted"),
        ("lost", by_kubelet, "Evicted", f"pod {by_kubelet} on node worker-b was evicted"),
    ]


async def test_pods_hosting_sessions_are_labelled_annotated_and_costlier(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=2))
    await ctl.reconcile(KEY)
    for name in api.created():
        register(service, name, sticky="SOFT")
    await settle(ctl, api)
    run = service.start_run(StartRunRequest(workflow="wf", worker_pool=POOL_ID))
    (session,) = run["sessions"]
    host = session["worker"]
    other = next(n for n in api.created() if n != host)
    before = len(api.writes)
    await settle(ctl, api)
    patches = [(p, b) for m, p, b in api.writes[before:] if m == "PATCH" and "/pods/" in p]
    assert patches == [
        (
            f"/api/v1/namespaces/{NS}/pods/{host}",
            {
                "metadata": {
                    "labels": {STICKY_LABEL: "true"},
                    "annotations": {SESSIONS_ANNOTATION: session["id"], DELETION_COST: "1010"},
                }
            },
        )
    ]  # one patch, on the one pod that changed
    meta = api.pods[host]["metadata"]
    assert meta["labels"][STICKY_LABEL] == "true"
    assert STICKY_LABEL not in api.pods[other]["metadata"]["labels"]
    before = len(api.writes)
    await settle(ctl, api)
    assert len(api.writes) == before  # nothing changed, nothing written
    service.cancel_run(run["run_id"])  # closes its session
    await settle(ctl, api)
    meta = api.pods[host]["metadata"]
    assert STICKY_LABEL not in meta["labels"]
    assert SESSIONS_ANNOTATION not in meta["annotations"]


async def test_labels_follow_sessions_within_a_tick_without_a_pod_event(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock(), tick=0.2)
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (pod,) = api.created()
    register(service, pod, sticky="HARD")
    await settle(ctl, api)
    ctl.start()
    try:
        run = service.start_run(StartRunRequest(workflow="wf", worker_pool=POOL_ID))
        for _ in range(50):
            if api.pods[pod]["metadata"]["labels"].get(STICKY_LABEL):
                break
            await asyncio.sleep(0.05)
        annotations = api.pods[pod]["metadata"]["annotations"]
        assert annotations[SESSIONS_ANNOTATION] == run["sessions"][0]["id"]
        # Its worker goes silent: the HARD session waits for this pod, which stays pinned.
        service.worker_lost(pod, "HeartbeatTimeout", "silent")
        await asyncio.sleep(0.5)
        assert api.pods[pod]["metadata"]["labels"].get(STICKY_LABEL) == "true"
        assert api.pods[pod]["metadata"]["annotations"][DELETION_COST] == "1000"
    finally:
        await ctl.stop()


async def test_scale_down_spares_pods_with_sessions_and_drains_one_only_when_it_must(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=3))
    await ctl.reconcile(KEY)
    for name in api.created():
        register(service, name, sticky="HARD")
    await settle(ctl, api)
    first = service.start_run(StartRunRequest(workflow="wf", worker_pool=POOL_ID))
    second = service.start_run(StartRunRequest(workflow="wf", worker_pool=POOL_ID))
    hosts = {first["sessions"][0]["worker"], second["sessions"][0]["worker"]}
    assert len(hosts) == 2  # sessions spread over the least loaded workers
    (idle,) = set(api.created()) - hosts
    await ctl.on_pool_event("MODIFIED", pool_body(replicas=2))
    await settle(ctl, api)
    assert api.deleted() == [idle]
    await ctl.on_pool_event("MODIFIED", pool_body(replicas=1))
    await settle(ctl, api)
    (_, victim) = api.deleted()
    assert victim in hosts
    assert api.reported_at_delete[victim][-1][:3] == ("draining", victim, "ScaledDown")
    run_id = first["run_id"] if victim == first["worker"] else second["run_id"]
    view = service.get_run(run_id)
    assert view["sessions"][0]["reason"] == "ScaledDown"
    assert (view["phase"], view["error"]["reason"]) == ("Failed", "SessionBroken")  # HARD


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


async def test_new_pods_fit_the_longest_activity_and_prefer_the_node_of_a_soft_session(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (first,) = api.created()
    assert api.pods[first]["spec"]["terminationGracePeriodSeconds"] == 60  # nothing known yet
    ctl.worker_registered(register(service, first, node="worker-a", sticky="SOFT"))
    on_node(api, first, "worker-a")
    await settle(ctl, api)
    run = service.start_run(StartRunRequest(workflow="wf", worker_pool=POOL_ID))
    assert run["sessions"][0]["worker"] == first
    gone = api.pods.pop(first)
    await ctl.on_pod_event("DELETED", gone)
    await ctl.reconcile(KEY)
    (_, second) = api.created()
    spec = api.pods[second]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 305  # start_to_close_timeout 300 + 5
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["TETHER_SHUTDOWN_GRACE"] == "300"
    preferred = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == [
        {
            "weight": 100,
            "preference": {
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker-a"]}]
            },
        }
    ]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in spec["affinity"]["nodeAffinity"]


async def test_a_refused_pod_is_tried_again_with_backoff_and_one_event_per_refusal(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    clock = Clock()
    events: list[tuple[str, str, str]] = []
    ctl = controller(service, client, clock)
    ctl._event = lambda key, body, kind, reason, message: events.append((kind, reason, message))  # type: ignore[method-assign]
    api.refuse_pods = 'Pod "gpu-x1" is invalid: spec.containers[0].image: Required value'
    await ctl.on_pool_event(None, pool_body(replicas=1))
    tries = []
    for _ in range(130):  # a reconcile every half second for 65 s, as pool events would
        await settle(ctl, api)
        tries.append(len([w for w in api.writes if w[0] == "POST"]))
        api.refuse_pods = api.refuse_pods.replace("x1", "x2")  # another random pod name
        clock.now += 0.5
    # Tried at 0, 1, 3, 7, 15, 31 and 63 s: 7 tries in 65 s, not one per reconcile.
    assert tries[-1] == 7, tries
    assert events == [
        (
            "Warning",
            "FailedCreate",
            "cannot create a pod from spec.template: the pod is invalid: "
            "spec.containers[0].image: Required value",
        )
    ]
    failure = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["ReplicaFailure"]
    assert "spec.containers[0].image" in failure["message"]
    # The user fixes the template: a new generation is tried at once.
    api.refuse_pods = ""
    await ctl.on_pool_event(
        "MODIFIED",
        {**pool_body(replicas=1), "metadata": {**pool_body()["metadata"], "generation": 3}},
    )
    await ctl.reconcile(KEY)
    assert len(api.created()) == 8
    assert len(api.pods) == 1


async def test_no_pod_is_created_in_a_namespace_being_deleted(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    clock = Clock()
    ctl = controller(service, client, clock)
    api.refuse_pods = (
        'pods "gpu-x" is forbidden: unable to create new content in namespace ml because '
        "it is being terminated"
    )
    await ctl.on_pool_event(None, pool_body(replicas=2))
    for _ in range(20):
        await settle(ctl, api)
        clock.now += 5
    assert len([w for w in api.writes if w[0] == "POST"]) == 1
    failure = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["ReplicaFailure"]
    assert failure["message"] == "namespace ml is being deleted: no pod is created in it"


def stuck(pod: dict[str, Any], waiting: dict[str, Any], **last: Any) -> dict[str, Any]:
    status = {
        "phase": "Pending" if not last else "Running",
        "containerStatuses": [
            {
                "name": "worker",
                "ready": False,
                "restartCount": 4 if last else 0,
                "state": {"waiting": waiting},
                "lastState": {"terminated": last} if last else {},
            }
        ],
    }
    return {**pod, "status": status}


@pytest.mark.parametrize(
    ("waiting", "last", "reason", "said"),
    [
        (
            {"reason": "ErrImagePull", "message": 'failed to pull image "nope:1"'},
            {},
            "ErrImagePull",
            'container worker: failed to pull image "nope:1"',
        ),
        (
            {"reason": "CrashLoopBackOff", "message": "back-off 40s"},
            {"exitCode": 3, "reason": "Error", "message": "cannot load flows.py: SyntaxError"},
            "CrashLoopBackOff",
            "keeps exiting (exit code 3, 4 restarts): cannot load flows.py: SyntaxError",
        ),
        (
            {"reason": "CrashLoopBackOff"},
            {"exitCode": 137, "reason": "OOMKilled"},
            "OOMKilled",
            "more memory than its limit",
        ),
        (
            {"reason": "CreateContainerConfigError", "message": 'secret "db" not found'},
            {},
            "CreateContainerConfigError",
            'secret "db" not found',
        ),
    ],
    ids=["image", "crash-loop", "oom", "config"],
)
async def test_a_pod_that_cannot_start_shows_on_the_pool_once_and_to_waiting_runs(
    service: SchedulerService,
    client: KubeClient,
    api: ApiServer,
    waiting: dict[str, Any],
    last: dict[str, Any],
    reason: str,
    said: str,
) -> None:
    events: list[tuple[str, str, str]] = []
    ctl = controller(service, client, Clock())
    ctl._event = lambda key, body, kind, why, message: events.append((kind, why, message))  # type: ignore[method-assign]
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (name,) = api.created()
    api.pods[name] = stuck(api.pods[name], waiting, **last)
    for _ in range(3):
        await settle(ctl, api)
    ready = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert f"pod {name}: {reason}" in ready["message"]
    assert said in ready["message"]
    assert [e for e in events if e[0] == "Warning"] == [("Warning", reason, events[-1][2])]
    assert said in events[-1][2]
    assert said in ctl.health.trouble(KEY)


async def test_an_unschedulable_pod_shows_why_on_the_pool(
    service: SchedulerService, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (name,) = api.created()
    message = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    api.pods[name]["status"] = {
        "phase": "Pending",
        "conditions": [{**condition, "message": message}],
    }
    await settle(ctl, api)
    ready = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["Ready"]
    assert ready["reason"] == "Unschedulable"
    assert message in ready["message"]
    await ctl.on_pool_event("DELETED", pool_body(replicas=1))
    assert not ctl.health.exists(KEY)


def with_image(body: dict[str, Any], image: str, **spec: Any) -> dict[str, Any]:
    """The pool with its worker image changed (a new template), a new generation."""
    changed = json.loads(json.dumps(body))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = image
    changed["spec"].update(spec)
    changed["metadata"]["generation"] += 1
    return changed


async def test_a_changed_template_rolls_the_pods_one_at_a_time_idle_ones_first(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=2))
    await ctl.reconcile(KEY)
    old = api.created()
    for name in old:
        register(service, name)
    await settle(ctl, api)
    await ctl.on_pool_event("MODIFIED", with_image(pool_body(replicas=2), "tether:v2"))
    await settle(ctl, api)
    # maxSurge 1, maxUnavailable 0: one new pod first, no old pod goes before it is ready.
    (surge,) = set(api.created()) - set(old)
    assert api.pods[surge]["spec"]["containers"][0]["image"] == "tether:v2"
    assert api.deleted() == []
    status = api.statuses()[-1]
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert progressing["reason"] == "RollingOut"
    assert "new pods to be ready" in progressing["message"]
    register(service, surge)
    await settle(ctl, api)
    (first_gone,) = api.deleted()
    assert api.statuses()[-1]["updatedReplicas"] == 1
    assert first_gone in old
    assert api.reported_at_delete[first_gone][-1][:3] == ("draining", first_gone, "ScaledDown")
    assert "template changed" in api.reported_at_delete[first_gone][-1][3]
    await ctl.on_pod_event(
        "DELETED",
        api.pods.get(first_gone)
        or {"metadata": {"name": first_gone, "namespace": NS, "labels": {POOL_LABEL: POOL}}},
    )
    await settle(ctl, api)
    (second,) = set(api.created()) - set(old) - {surge}
    register(service, second)
    await settle(ctl, api)
    assert sorted(api.deleted()) == sorted(old)
    for name in old:
        await ctl.on_pod_event(
            "DELETED", {"metadata": {"name": name, "namespace": NS, "labels": {POOL_LABEL: POOL}}}
        )
    await settle(ctl, api)
    status = api.statuses()[-1]
    assert (status["replicas"], status["updatedReplicas"]) == (2, 2)
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert progressing["reason"] == "Updated"


async def test_a_rollout_waits_for_sessions_to_end_or_for_the_session_grace(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    clock = Clock()
    ctl = controller(service, client, clock)
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (old,) = api.created()
    register(service, old, sticky="HARD")
    await settle(ctl, api)
    run = service.start_run(StartRunRequest(workflow="wf", worker_pool=POOL_ID))
    assert run["sessions"][0]["worker"] == old
    new_body = with_image(pool_body(replicas=1), "tether:v2", rollout={"sessionGrace": "10m"})
    await ctl.on_pool_event("MODIFIED", new_body)
    await settle(ctl, api)
    (new,) = set(api.created()) - {old}
    register(service, new)
    for _ in range(3):
        clock.now += 60
        await settle(ctl, api)
    assert api.deleted() == [], "a pod with a session stays while the grace runs"
    progressing = {c["type"]: c for c in api.statuses()[-1]["conditions"]}["Progressing"]
    assert f"pod {old} keeps its 1 session(s)" in progressing["message"]
    clock.now += 10 * 60
    await settle(ctl, api)
    assert api.deleted() == [old], "sessionGrace is over: it drains"
    assert service.get_run(run["run_id"])["sessions"][0]["reason"] == "ScaledDown"


async def test_pods_made_before_pods_carried_a_template_hash_are_not_rolled(
    service: Service, client: KubeClient, api: ApiServer
) -> None:
    ctl = controller(service, client, Clock())
    await ctl.on_pool_event(None, pool_body(replicas=1))
    await ctl.reconcile(KEY)
    (name,) = api.created()
    del api.pods[name]["metadata"]["annotations"][TEMPLATE_HASH]  # an older operator's pod
    register(service, name)
    await settle(ctl, api)
    await settle(ctl, api)
    assert api.created() == [name]
    assert api.deleted() == []
