"""Who may talk to the scheduler, on a Helm install with auth on (the chart's default).

Calls go to the scheduler's Service from inside the cluster, with `kubectl exec` into
a worker pod (it holds the image's Python and its own projected token): no token and
a forged token get 401; another pod's token, a pod outside the served namespaces and a
client whose RBAC does not allow the verb get 403; a worker cannot complete a task
dispatched to another pod, and the run goes on untouched; a client whose Role allows
`create` on workflowruns starts a run; the pool's pods run their runs to Succeeded.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import scenario
from tests.e2e.conftest import IMAGE, PREFIX, Install
from tests.e2e.kube import Kube, Obj, eventually, running_and_ready
from tests.e2e.testdata_pools import script_pool

pytestmark = pytest.mark.timeout(300)

POOL = "auth"
AUDIENCE = "tether.dev/scheduler"
TOKEN_FILE = "/var/run/secrets/tether.dev/token"

FLOWS = """
import asyncio

import worker_runtime as workflows
from worker_runtime import activity


@workflows.activity()
async def hold(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return activity.info().pod


@workflows.workflow.define(name="auth-hold")
class Hold:
    @workflows.workflow.entrypoint
    async def execute(self, seconds: float) -> str:
        return await hold(seconds)
"""

CALLS = textwrap.dedent(
    """
    import json, os, sys, urllib.error, urllib.request
    url, calls = sys.argv[1] or os.environ["TETHER_SCHEDULER_URL"], json.loads(sys.argv[2])
    out = []
    for call in calls:
        headers = dict(call.get("headers") or {})
        token = call.get("token")
        if token == "@file":
            token = open(os.environ["TETHER_TOKEN_FILE"]).read().strip()
        if token:
            headers["Authorization"] = "Bearer " + token
        body = call.get("body")
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            url + call["path"], data=data, headers=headers, method=call.get("method", "GET")
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                out.append([response.status, json.loads(response.read() or b"null")])
        except urllib.error.HTTPError as exc:
            out.append([exc.code, json.loads(exc.read() or b"null")])
    print(json.dumps(out))
    """
)


def call(
    method: str,
    path: str,
    *,
    token: str | None = "@file",
    body: Any = None,
    worker: str | None = None,
) -> dict[str, Any]:
    """One HTTP call for `calls_from`; token `@file` is the calling pod's own."""
    headers = {"X-Tether-Worker": worker} if worker else {}
    return {"method": method, "path": path, "token": token, "body": body, "headers": headers}


def calls_from(ns: Kube, pod: str, *calls: dict[str, Any], url: str = "") -> list[Any]:
    """Make `calls` from inside `pod`: [status, body] of each."""
    out = ns.run("exec", pod, "--", "python", "-c", CALLS, url, json.dumps(calls), timeout=90)
    return list(json.loads(out))


def assert_forbidden(answers: list[Any]) -> None:
    """Every [status, body] of `calls_from` is a 403 Forbidden Problem."""
    for status, body in answers:
        assert status == 403, body
        assert body["error"] == "Forbidden"


def token_of(ns: Kube, account: str, *, audience: str | None = AUDIENCE) -> str:
    args = ["create", "token", account, "--duration=10m"]
    if audience:
        args.append(f"--audience={audience}")
    return ns.run(*args).strip()


def pool_objects() -> list[Obj]:
    return script_pool(
        POOL, "flows.py", source=FLOWS, workflow="auth-hold", configmap="auth-flows", replicas=2
    )


@dataclass(frozen=True)
class Pool:
    ns: Kube
    pods: tuple[str, str]

    @property
    def namespace(self) -> str:
        assert self.ns.namespace is not None
        return self.ns.namespace


@pytest.fixture(scope="module")
def pool(tether: Install) -> Iterator[Pool]:
    """Two worker pods of a pool in a served namespace, registered with auth on."""
    ns = tether.workloads["runs"]
    ns.apply(*pool_objects())
    workers = scenario.Pool(ns, POOL).ready(2, timeout=180).pods()
    first, second = sorted(p["metadata"]["name"] for p in workers)
    # Registered: the Workflow lists its serving pods once workers registered it.
    eventually(
        lambda: (
            len(ns.get("wf", "auth-hold").get("status", {}).get("pods") or []) == 2
            or _registered(ns, first, second)
        ),
        timeout=120,
        what="both workers registered",
    )
    yield Pool(ns, (first, second))
    ns.delete("workerpool", POOL)
    ns.delete("workflow", "auth-hold")
    ns.delete("configmap", "auth-flows")


def _registered(ns: Kube, *pods: str) -> bool:
    """Each pod's worker answers a heartbeat as itself (it registered)."""
    for pod in pods:
        ((status, _),) = calls_from(ns, pod, call("POST", f"/v1/workers/{pod}/heartbeat", body={}))
        if status != 200:
            return False
    return True


def test_worker_pods_carry_their_token_and_run_runs_to_success(pool: Pool) -> None:
    spec = pool.ns.get("pod", pool.pods[0])["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "tether-token"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == AUDIENCE
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["TETHER_TOKEN_FILE"] == TOKEN_FILE

    quick = scenario.run(pool.ns, "auth-hold", name="auth-quick", input={"seconds": 0.1})
    assert quick.wait(timeout=120).phase == "Succeeded"
    assert quick.result in pool.pods


def test_missing_and_forged_tokens_are_refused_with_401(pool: Pool) -> None:
    pod = pool.pods[0]
    forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06YWRtaW4ifQ.c2lnbmF0dXJl"
    answers = calls_from(
        pool.ns,
        pod,
        call("GET", "/healthz", token=None),
        call("GET", "/v1/runs", token=None),
        call("POST", f"/v1/workers/{pod}/heartbeat", token=None, body={}),
        call("POST", f"/v1/workers/{pod}/heartbeat", token=forged, body={}),
        call("GET", "/v1/runs", token=forged),
    )
    assert answers[0] == [200, {"ok": True}], "probes need no token"
    for status, body in answers[1:]:
        assert status == 401, body
        assert body["error"] == "Unauthenticated"
    assert "bearer token" in answers[1][1]["message"]
    assert "refused" in answers[3][1]["message"]


def test_a_pod_may_act_only_as_its_own_worker(pool: Pool) -> None:
    pod, other = pool.pods
    registration = {
        "worker_id": other,
        "pod": other,
        "pool": f"{pool.namespace}.{POOL}",
        "incarnation": "impostor",
        "namespace": pool.namespace,
    }
    answers = calls_from(
        pool.ns,
        pod,
        call("POST", f"/v1/workers/{other}/heartbeat", body={}),
        call("POST", f"/v1/workers/{other}/poll", body={"max_tasks": 1, "wait": 0}),
        call("POST", "/v1/workers", body=registration),
        call("POST", f"/v1/workers/{pod}/heartbeat", body={}),
    )
    for status, body in answers[:3]:
        assert status == 403, body
        assert body["error"] == "Forbidden"
        assert f"pod {pool.namespace}/{pod}" in body["message"]
    assert answers[3][0] == 200, "its own heartbeat is accepted"
    assert _registered(pool.ns, other), "the other worker is still registered as itself"


def test_a_worker_cannot_complete_another_pods_task(pool: Pool) -> None:
    ns = pool.ns
    held = scenario.run(ns, "auth-hold", name="auth-long", input={"seconds": 12})

    def running() -> dict[str, Any] | None:
        return next((a for a in held.activities if a["state"] == "Running" and a.get("pod")), None)

    activity = eventually(running, timeout=90, what="the activity running on a pod")
    owner = activity["pod"]
    (intruder,) = [p for p in pool.pods if p != owner]
    task_id = f"{pool.namespace}.{held.name}/{activity['seq']}/{activity['attempt']}"
    forged = {"task_id": task_id, "ok": True, "result": "forged"}
    answers = calls_from(
        ns,
        intruder,
        call("POST", f"/v1/tasks/{task_id}/complete", body=forged, worker=intruder),
        call("POST", f"/v1/tasks/{task_id}/complete", body=forged, worker=owner),
        call("POST", f"/v1/workers/{intruder}/report", body={"completions": [forged]}),
    )
    assert_forbidden(answers)
    assert f"dispatched to worker {owner!r}" in answers[0][1]["message"]
    assert answers[0][1]["field"] == "task_id"

    assert held.wait(timeout=120).phase == "Succeeded"
    assert held.result == owner, "the real attempt's result"
    assert [a["attempt"] for a in held.activities] == [1], "nothing was retried"


def test_clients_need_rbac_on_workflowruns(pool: Pool) -> None:
    ns = pool.ns
    ns.run("create", "serviceaccount", "auth-nobody")
    ns.run("create", "serviceaccount", "auth-starter")
    ns.run(
        "create",
        "role",
        "auth-starter",
        "--verb=create,get",
        "--resource=workflowruns.tether.dev",
    )
    ns.run(
        "create",
        "rolebinding",
        "auth-starter",
        "--role=auth-starter",
        f"--serviceaccount={pool.namespace}:auth-starter",
    )
    try:
        nobody = token_of(ns, "auth-nobody")
        starter = token_of(ns, "auth-starter")
        api_audience = token_of(ns, "auth-starter", audience=None)

        def start(name: str, token: str) -> dict[str, Any]:
            body = {"workflow": "auth-hold", "run_id": f"{pool.namespace}.{name}"}
            body["input"] = {"seconds": 0.1}
            return call("POST", "/v1/runs", token=token, body=body)

        pod = pool.pods[0]
        answers = calls_from(
            ns,
            pod,
            start("auth-http-refused", nobody),
            call("GET", f"/v1/runs/{pool.namespace}.auth-quick", token=nobody),
            call("GET", f"/v1/runs/{pool.namespace}.auth-quick", token="@file"),
            start("auth-http-1", starter),
            start("auth-http-2", api_audience),
            call("GET", f"/v1/runs/{pool.namespace}.auth-http-1/wait?timeout=60", token=starter),
            call("POST", f"/v1/runs/{pool.namespace}.auth-http-1/cancel", token=starter, body={}),
        )
        for status, body in answers[:3]:
            assert status == 403, body
            assert "workflowruns" in body["message"]
        assert "may not create workflowruns" in answers[0][1]["message"]
        assert "system:serviceaccount:" in answers[0][1]["message"]
        assert answers[3][0] == 201, answers[3]
        assert answers[4][0] == 201, "a token for the API server's audience works too"
        assert answers[5][0] == 200
        assert answers[5][1]["phase"] == "Succeeded"
        made = ns.get("wfr", "auth-http-1")
        assert made["spec"]["workflowRef"]["name"] == "auth-hold", "POST /v1/runs made it"
        assert answers[6][0] == 403, "cancelling needs delete"
        assert "may not delete workflowruns" in answers[6][1]["message"]
        ((listed, runs),) = calls_from(ns, pod, call("GET", "/v1/runs", token=starter))
        assert listed == 200
        assert runs["runs"] == [], "listing needs list: no namespace is shown"
    finally:
        for kind, name in (
            ("rolebinding", "auth-starter"),
            ("role", "auth-starter"),
            ("serviceaccount", "auth-starter"),
            ("serviceaccount", "auth-nobody"),
        ):
            ns.delete(kind, name)


def test_pods_and_accounts_of_namespaces_the_operator_does_not_serve_are_refused(
    pool: Pool, kube: Kube
) -> None:
    url = next(
        e["value"]
        for e in pool.ns.get("pod", pool.pods[0])["spec"]["containers"][0]["env"]
        if e["name"] == "TETHER_SCHEDULER_URL"
    )
    token_volume = {
        "name": "tether-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"audience": AUDIENCE, "path": "token"}},
            ]
        },
    }
    impostor = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "impostor", "labels": {"tether.dev/pool": POOL}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "impostor",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                    "env": [{"name": "TETHER_TOKEN_FILE", "value": TOKEN_FILE}],
                    "volumeMounts": [
                        {
                            "name": "tether-token",
                            "mountPath": "/var/run/secrets/tether.dev",
                            "readOnly": True,
                        }
                    ],
                }
            ],
            "volumes": [token_volume],
        },
    }
    with kube.scratch_namespace(f"{PREFIX}-foreign-{uuid.uuid4().hex[:5]}") as foreign:
        assert foreign.namespace is not None
        foreign.apply(impostor)
        eventually(
            lambda: running_and_ready(foreign.get("pod", "impostor")),
            timeout=120,
            what="the foreign pod running",
        )
        account = token_of(foreign, "default")
        registration = {
            "worker_id": "impostor",
            "pod": "impostor",
            "pool": f"{foreign.namespace}.{POOL}",
            "incarnation": "x",
            "namespace": foreign.namespace,
        }
        answers = calls_from(
            foreign,
            "impostor",
            call("POST", "/v1/workers", body=registration),
            call("POST", f"/v1/workers/{pool.pods[0]}/heartbeat", body={}),
            call("POST", f"/v1/workers/{pool.pods[0]}/heartbeat", token=account, body={}),
            call("GET", f"/v1/runs/{pool.namespace}.auth-quick", token=account),
            url=url,
        )
        for status, body in answers:
            assert status == 403, body
        assert "does not serve" in answers[0][1]["message"]
        assert "not a pod" in answers[2][1]["message"] or "projected" in answers[2][1]["message"]
