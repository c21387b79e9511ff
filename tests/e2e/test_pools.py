"""The WorkerPool controller against the real cluster, with real worker pods.

The controller runs in-process (`PoolHarness`): a scheduler service and its HTTP API
bound on every interface (pods reach the host at the cluster's bridge address), and
kopf watching only the test's namespace. Pods run the project image with a workflow
file mounted from a ConfigMap, the way a user runs their own code without building
an image; they register with the in-process scheduler, and the tests drive runs
through its HTTP API and the pool through kubectl.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest

from tests.e2e.kube import Kube, Obj, condition, eventually
from tests.e2e.nodes import host_from_pods
from tests.e2e.operator_env import REPO, Operator, wait_for, workflow_run
from tests.e2e.scenario import Pool, workflow
from tests.e2e.testdata_pools import script_pool
from tether_operator.engine import EngineConfig
from tether_operator.k8s.api.client import KubeClient, load_config, resource_path
from tether_operator.k8s.api.events import EventRecorder
from tether_operator.k8s.pools import controller as pools
from tether_operator.k8s.pools.pods import DELETION_COST
from tether_operator.k8s.resources.naming import POOL_LABEL, pool_id_for
from tether_operator.scheduler import SchedulerService, serve
from tether_types.notices import Notice

FLOWS = """
import asyncio

import worker_runtime as workflows
from worker_runtime import activity, run_sticky_worker_session


@workflows.activity()
async def hold(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return activity.info().worker_id


@workflows.workflow.define(name="hold")
class Hold:
    @workflows.workflow.entrypoint
    async def execute(self, seconds: float, session: bool = False) -> str:
        if session:
            async with run_sticky_worker_session():
                return await hold(seconds)
        return await hold(seconds)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class PoolHarness:
    """The operator's pool side in a background thread: scheduler, HTTP API, kopf."""

    def __init__(self, namespace: str, host: str) -> None:
        self.namespace = namespace
        self.host = host
        """Where pods reach this machine."""
        self.port = _free_port()
        self.notices: list[Notice] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pool-harness", daemon=True)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/v1", timeout=30)

    def __enter__(self) -> PoolHarness:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the pool harness did not start: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.api.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        service = SchedulerService(
            EngineConfig(require_registered_workflows=False), namespace=self.namespace
        )
        service.subscribe(self.notices.append)
        await service.start()
        ready = asyncio.Event()
        server = asyncio.create_task(serve("0.0.0.0", self.port, service, ready))
        await ready.wait()
        config = load_config()
        client = KubeClient(config)
        registry = kopf.OperatorRegistry()

        @kopf.on.login(registry=registry)
        def _login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(
                server=config.server,
                ca_path=config.ca_file,
                certificate_path=config.cert_file,
                private_key_path=config.key_file,
                token=config.bearer_token(),
                insecure=config.insecure,
                default_namespace=self.namespace,
            )

        events = EventRecorder(client)
        events.start()
        controller = pools.PoolController(
            service,
            client,
            scheduler_url=f"http://{self.host}:{self.port}",
            startup_grace=0.0,
            events=events,
        )
        pools.register_handlers(registry, controller)
        ticking = asyncio.create_task(controller.run())
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False
        kopf_ready = asyncio.Event()
        operator = asyncio.create_task(
            kopf.operator(
                registry=registry,
                settings=settings,
                namespaces=[self.namespace],
                standalone=True,
                stop_flag=self._stop,
                ready_flag=kopf_ready,
            )
        )
        await kopf_ready.wait()
        self._ready.set()
        try:
            await operator
        finally:
            ticking.cancel()
            server.cancel()
            await asyncio.gather(ticking, server, return_exceptions=True)
            await service.stop()
            await events.stop()
            await client.aclose()

    # ------------------------------------------------------------------ helpers

    def start_run(self, pool: str, **input_: Any) -> str:
        body = {
            "workflow": "hold",
            "input": input_,
            "worker_pool": pool_id_for(self.namespace, pool),
        }
        response = self.api.post("/runs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.api.get(f"/runs/{run_id}").json())

    def wait(self, run_id: str, timeout: float = 90) -> dict[str, Any]:
        view = self.api.get(
            f"/runs/{run_id}/wait", params={"timeout": timeout}, timeout=timeout + 5
        )
        return dict(view.json())

    def workers(self) -> dict[str, dict[str, Any]]:
        return {w["worker_id"]: w for w in self.api.get("/workers").json()["workers"] if w["alive"]}

    def losses(self) -> dict[str, str]:
        """Workers lost or draining (their pod terminates) and the reason the scheduler
        was given, from its notices: the first report of each, unless that was the
        worker's own `ProcessExited` (its SIGTERM), which the pod watch's reason (an
        eviction, a deletion) refines, as the engine refines it. The worker's report
        and the watch race: either may come first."""
        lost: dict[str, str] = {}
        for n in list(self.notices):
            m = re.match(r"worker (\S+) (?:lost|\(.*\) is draining): (\w+)", n.message)
            if n.reason in ("WorkerLost", "WorkerDraining") and m:
                worker, reason = m.group(1), m.group(2)
                if lost.get(worker, "ProcessExited") == "ProcessExited":
                    lost[worker] = reason
        return lost


@pytest.fixture
def ns(scratch: Kube) -> Kube:
    return scratch


@pytest.fixture
def harness(ns: Kube) -> Iterator[PoolHarness]:
    assert ns.namespace is not None
    with PoolHarness(ns.namespace, host_from_pods()) as h:
        yield h


def worker_pool(name: str, image: str, **spec: Any) -> list[Obj]:
    """A ConfigMap with the test's workflow file and a WorkerPool that runs it."""
    return script_pool(
        name,
        "flows.py",
        source=FLOWS,
        image=image,
        configmap=f"{name}-flows",
        template={
            "metadata": {"labels": {"team": "e2e"}},
            # a 3 s activity finishes while its pod drains
            "spec": {"terminationGracePeriodSeconds": 10},
        },
        **spec,
    )


def registered(h: PoolHarness, ns: Kube, pool: str, count: int) -> list[str]:
    """Wait until exactly `count` pods of `pool` exist and each one's worker registered."""

    def check() -> list[str] | None:
        names = sorted(p["metadata"]["name"] for p in ns.pods(f"{POOL_LABEL}={pool}"))
        live = h.workers()
        if len(names) == count and all(n in live for n in names):
            return names
        return None

    return list(eventually(check, timeout=120, what=f"{count} registered pods of pool {pool}"))


def pool_events(ns: Kube, pool: str) -> list[str]:
    """Reasons of the Events about WorkerPool `pool`."""
    return [
        e["reason"]
        for e in ns.list("events")
        if (e["involvedObject"].get("kind"), e["involvedObject"]["name"]) == ("WorkerPool", pool)
    ]


def columns(ns: Kube, pool: str) -> dict[str, str]:
    head, row = ns.run("get", "wp", pool, "-o", "wide").splitlines()[:2]
    return dict(zip(head.split(), row.split(), strict=True))


def test_pods_carry_the_pool_and_kubectl_scale_removes_idle_pods_first(
    ns: Kube, harness: PoolHarness, image: str
) -> None:
    ns.apply(*worker_pool("gpu", image, replicas=1, slots=2, sessionCapacity=3))
    (first,) = registered(harness, ns, "gpu", 1)
    pod = ns.get("pod", first)
    meta = pod["metadata"]
    assert meta["labels"][POOL_LABEL] == "gpu"
    assert meta["labels"]["team"] == "e2e"
    assert [(o["kind"], o["name"], o["controller"]) for o in meta["ownerReferences"]] == [
        ("WorkerPool", "gpu", True)
    ]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["TETHER_POOL"]["value"] == pool_id_for(str(ns.namespace), "gpu")
    assert env["TETHER_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert (env["TETHER_SLOTS"]["value"], env["TETHER_SESSION_CAPACITY"]["value"]) == ("2", "3")
    worker = harness.workers()[first]
    assert (worker["pod"], worker["node"]) == (first, pod["spec"]["nodeName"])
    assert worker["pool"] == pool_id_for(str(ns.namespace), "gpu")

    run_id = harness.start_run("gpu", seconds=120, session=True)
    eventually(
        lambda: harness.run(run_id)["sessions"] and harness.run(run_id)["sessions"][0]["worker"],
        what="the run's session bound",
    )
    ns.run("scale", "wp/gpu", "--replicas=3")
    pods = registered(harness, ns, "gpu", 3)
    # The session's pod runs the workflow and the activity: the others cost 0.
    eventually(
        lambda: int(ns.get("pod", first)["metadata"]["annotations"][DELETION_COST]) > 1000,
        what="the busy pod's deletion cost",
    )
    assert {ns.get("pod", p)["metadata"]["annotations"][DELETION_COST] for p in pods} - {
        ns.get("pod", first)["metadata"]["annotations"][DELETION_COST]
    } == {"0"}
    cols = eventually(
        lambda: (c := columns(ns, "gpu"))["READY"] == "3" and c["SESSIONS"] == "1" and c,
        what="kubectl get wp columns",
    )
    assert (cols["DESIRED"], cols["BUSY"]) == ("3", "1")

    ns.run("scale", "wp/gpu", "--replicas=1")
    assert registered(harness, ns, "gpu", 1) == [first]  # the busy pod stays
    assert harness.losses() == {p: "ScaledDown" for p in pods if p != first}
    reasons = eventually(
        lambda: (r := pool_events(ns, "gpu")).count("SuccessfulDelete") == 2 and r,
        what="the pool's Events",
    )
    assert reasons.count("SuccessfulCreate") == 3
    assert harness.run(run_id)["phase"] == "Running"
    assert harness.run(run_id)["sessions"][0]["state"] == "Open"
    harness.api.post(f"/runs/{run_id}/cancel")


def test_autoscale_from_zero_when_a_run_waits_and_back_to_zero_when_idle(
    ns: Kube, harness: PoolHarness, image: str
) -> None:
    ns.apply(
        *worker_pool("burst", image, replicas=0, autoscale=True, maxReplicas=2, idleTimeout="3s")
    )
    eventually(lambda: columns(ns, "burst")["DESIRED"] == "0", what="the pool at zero")
    assert ns.pods(f"{POOL_LABEL}=burst") == []
    run_id = harness.start_run("burst", seconds=1)
    eventually(lambda: ns.get("wp", "burst")["spec"]["replicas"] == 1, what="autoscale to one pod")
    view = harness.wait(run_id)
    assert view["phase"] == "Succeeded", view
    (pod,) = {a["pod"] for a in view["activities"]}
    eventually(
        lambda: ns.get("wp", "burst")["spec"]["replicas"] == 0, what="autoscale back to zero"
    )
    eventually(lambda: not ns.pods(f"{POOL_LABEL}=burst"), what="the idle pod deleted")
    assert harness.losses() == {pod: "ScaledDown"}
    pool = ns.get("wp", "burst")
    assert condition(pool, "Ready") == "True"
    assert pool["status"]["replicas"] == 0


def test_a_deleted_pod_is_reported_lost_and_replaced(
    ns: Kube, harness: PoolHarness, image: str
) -> None:
    ns.apply(*worker_pool("cpu", image, replicas=1))
    (first,) = registered(harness, ns, "cpu", 1)
    run_id = harness.start_run("cpu", seconds=3, session=True)
    eventually(
        lambda: (
            harness.run(run_id)["activities"]
            and harness.run(run_id)["activities"][0]["state"] == "Running"
        ),
        what="the activity running",
    )
    Pool(ns, "cpu").kill(first)
    eventually(lambda: harness.losses() == {first: "PodDeleted"}, what="the loss reported")
    (second,) = registered(harness, ns, "cpu", 1)
    assert second != first
    view = harness.wait(run_id)
    assert view["phase"] == "Succeeded", (view["error"], view["activities"], view["sessions"])
    # The pod drained: the attempt it ran finished there, not on the replacement.
    assert view["result"] == first

    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": second, "namespace": ns.namespace},
    }
    ns.run(
        "create",
        "--raw",
        resource_path("v1", "pods", ns.namespace, second, "eviction"),
        "-f",
        "-",
        stdin=json.dumps(eviction),
    )
    eventually(lambda: harness.losses().get(second) == "Evicted", what="the eviction reported")
    (third,) = registered(harness, ns, "cpu", 1)
    assert third not in (first, second)


class PodReachableOperator(Operator):
    """`tether operator` as a host process that worker pods can reach."""

    def _spawn(self, out: Any, env: dict[str, str]) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "tether_operator.cli", "operator", "--host", "0.0.0.0"]
        command += ["--port", str(self.port), "--metrics-port", "0", "--namespace", self.namespace]
        command += ["--scheduler-url", f"http://{host_from_pods()}:{self.port}"]
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def test_the_operator_scales_a_pool_from_zero_for_a_run_applied_with_kubectl(
    ns: Kube, image: str, tmp_path: Path
) -> None:
    """Through `tether operator` itself: the run waits for its workflow's first worker,
    which only the pool's first pod brings."""
    assert ns.namespace is not None
    operator = PodReachableOperator(ns, ns.namespace, tmp_path)
    operator.start()
    try:
        ns.apply(
            *worker_pool(
                "lazy", image, replicas=0, autoscale=True, maxReplicas=1, idleTimeout="2s"
            ),
            workflow("hold", "lazy"),
            workflow_run("r1", "hold", {"seconds": 0.1}),
        )
        run = wait_for(ns, "r1", timeout=120)
        (pod,) = {a["pod"] for a in run["status"]["activities"]}
        assert pod.startswith("lazy-")
        assert run["status"]["result"] == pod
        eventually(lambda: not ns.pods(f"{POOL_LABEL}=lazy"), what="the pool back at zero")
        assert "Autoscaled" in pool_events(ns, "lazy")
    finally:
        operator.stop()
