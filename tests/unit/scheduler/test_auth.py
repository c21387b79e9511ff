"""The scheduler's auth seam (`scheduler/auth.py`) with a fake `Authenticator`: every call
but the probes needs a token; a worker acts only as its own pod and reports only its own
tasks; client calls need the verb in the run's namespace; a refused call changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tether_operator.engine import WorkflowNotFound
from tether_operator.scheduler import SchedulerService, create_app
from tether_operator.scheduler.auth import (
    Forbidden,
    Gate,
    PodIdentity,
    Principal,
    Unauthenticated,
)
from worker_runtime.protocol import RegisterWorkerRequest, StartRunRequest

from .conftest import commands, schedule

POD_A = PodIdentity("team", "w1", "uid-a")
POD_B = PodIdentity("team", "w2", "uid-b")


@dataclass
class FakeAuthenticator:
    """Tokens by value; RBAC as a set of (username, verb, resource, namespace)."""

    principals: dict[str, Principal]
    grants: set[tuple[str, str, str, str | None]] = field(default_factory=set)
    registrations: list[str] = field(default_factory=list)
    refuse_registration: str | None = None

    async def authenticate(self, token: str) -> Principal:
        try:
            return self.principals[token]
        except KeyError:
            raise Unauthenticated("the bearer token was refused: unknown") from None

    async def allows(
        self, principal: Principal, verb: str, resource: str, namespace: str | None
    ) -> bool:
        return (principal.username, verb, resource, namespace) in self.grants

    async def check_registration(self, principal: Principal, req: RegisterWorkerRequest) -> None:
        if self.refuse_registration:
            raise Forbidden(self.refuse_registration)
        self.registrations.append(req.worker_id)


def pod_principal(pod: PodIdentity) -> Principal:
    return Principal(username=f"system:serviceaccount:{pod.namespace}:default", pod=pod)


ALICE = Principal(username="alice", groups=("system:authenticated",))


@pytest.fixture
def fake() -> FakeAuthenticator:
    return FakeAuthenticator(
        {
            "token-a": pod_principal(POD_A),
            "token-b": pod_principal(POD_B),
            "token-a-new": pod_principal(PodIdentity("team", "w1", "uid-a2")),
            "token-other-ns": pod_principal(PodIdentity("elsewhere", "w1", "uid-x")),
            "alice": ALICE,
        }
    )


@pytest.fixture(params=[True, False], ids=["fast-path", "routed"])
async def api(
    request: pytest.FixtureRequest, service: SchedulerService, fake: FakeAuthenticator
) -> AsyncIterator[httpx.AsyncClient]:
    def alive(worker_id: str) -> bool:
        return any(w["worker_id"] == worker_id and w["alive"] for w in service.workers())

    gate = Gate(
        fake,
        run_namespace=lambda run_id: run_id.partition(".")[0] if "." in run_id else "home",
        worker_alive=alive,
    )
    app = create_app(service, manage_lifecycle=False, fast_path=request.param, gate=gate)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client:
        yield client


def auth(token: str, worker: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if worker:
        headers["X-Tether-Worker"] = worker
    return headers


def registration(worker_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "pod": worker_id,
        "incarnation": "i1",
        "workflows": [{"name": "wf"}],
        "activities": [{"name": "act"}],
        "namespace": "team",
        **extra,
    }


async def register(api: httpx.AsyncClient, token: str, worker_id: str) -> httpx.Response:
    return await api.post("/v1/workers", json=registration(worker_id), headers=auth(token))


async def test_probes_are_open_and_everything_else_needs_a_token(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).status_code == 200
    for response in (
        await api.get("/v1/runs"),
        await api.post("/v1/workers/w1/poll", json={"max_tasks": 1, "wait": 0}),
        await api.get("/openapi.json"),
        await api.get("/v1/runs", headers={"Authorization": "Basic YWxpY2U6eA=="}),
    ):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == 'Bearer realm="tether"'
        body = response.json()
        assert body["error"] == "Unauthenticated"
        assert "bearer token" in body["message"]
    forged = await api.get("/v1/runs", headers=auth("forged"))
    assert forged.status_code == 401
    assert forged.json()["message"] == "the bearer token was refused: unknown"


async def test_a_pod_registers_and_calls_only_as_itself(
    api: httpx.AsyncClient, fake: FakeAuthenticator, service: SchedulerService
) -> None:
    assert (await register(api, "token-a", "w1")).status_code == 200
    assert fake.registrations == ["w1"]
    refused = await register(api, "token-a", "w2")
    assert refused.status_code == 403
    assert refused.json()["field"] == "worker_id"
    assert "pod team/w1 may not act as worker 'w2'" in refused.json()["message"]
    posing = await api.post(
        "/v1/workers", json=registration("w1", pod="w2"), headers=auth("token-a")
    )
    assert posing.status_code == 403
    assert posing.json()["field"] == "pod"
    assert (await register(api, "token-b", "w2")).status_code == 200

    for path, body in (
        ("/v1/workers/w2/poll", {"max_tasks": 1, "wait": 0}),
        ("/v1/workers/w2/heartbeat", {}),
        ("/v1/workers/w2/report", {}),
        ("/v1/workers/w2/lost", {"reason": "ProcessExited"}),
    ):
        response = await api.post(path, json=body, headers=auth("token-a"))
        assert response.status_code == 403, (path, response.text)
    assert (await api.post("/v1/workers/w1/heartbeat", json={}, headers=auth("token-a"))).is_success
    assert [w["worker_id"] for w in service.workers() if w["alive"]] == ["w1", "w2"]
    # A user's token (no pod) may not act as a worker at all.
    user = await api.post("/v1/workers/w1/heartbeat", json={}, headers=auth("alice"))
    assert user.status_code == 403
    assert "projected service-account token" in user.json()["message"]


async def test_the_registering_pod_owns_its_worker_id(
    api: httpx.AsyncClient, service: SchedulerService
) -> None:
    assert (await register(api, "token-a", "w1")).status_code == 200
    # A new pod of the same name (another uid) must register before it calls...
    stale = await api.post("/v1/workers/w1/heartbeat", json={}, headers=auth("token-a-new"))
    assert stale.status_code == 403
    assert "register again from this pod" in stale.json()["message"]
    assert (await register(api, "token-a-new", "w1")).status_code == 200
    # ...and then the old pod's token is the stale one.
    old = await api.post("/v1/workers/w1/heartbeat", json={}, headers=auth("token-a"))
    assert old.status_code == 403
    # A pod of the same name in another namespace may not take over a live worker.
    other = await register(api, "token-other-ns", "w1")
    assert other.status_code == 403
    assert "still alive" in other.json()["message"]


async def test_a_worker_serves_its_own_pods_namespace_only(
    api: httpx.AsyncClient, service: SchedulerService
) -> None:
    # Pod elsewhere/w1 claims namespace team: refused, naming the field.
    claimed = await register(api, "token-other-ns", "w1")
    assert claimed.status_code == 403
    assert claimed.json()["field"] == "namespace"
    assert "may not register for namespace 'team'" in claimed.json()["message"]
    assert service.workers() == [], "nothing registered"
    # Without a claim it registers, for its own pod's namespace.
    body = registration("w1", namespace="")
    own = await api.post("/v1/workers", json=body, headers=auth("token-other-ns"))
    assert own.status_code == 200
    assert [w["namespace"] for w in service.workers()] == ["elsewhere"]
    # Its registration of `wf` is no registration in namespace team...
    with pytest.raises(WorkflowNotFound):
        service.start_run(StartRunRequest(workflow="wf", run_id="team.r1"), namespace="team")
    await register(api, "token-b", "w2")  # team/w2
    # ...and a run of namespace team never reaches it.
    service.start_run(StartRunRequest(workflow="wf", run_id="team.r1"), namespace="team")
    polled = await api.post(
        "/v1/workers/w1/poll", json={"max_tasks": 5, "wait": 0}, headers=auth("token-other-ns")
    )
    assert polled.json()["tasks"] == []
    polled = await api.post(
        "/v1/workers/w2/poll", json={"max_tasks": 5, "wait": 0}, headers=auth("token-b")
    )
    assert [t["run_id"] for t in polled.json()["tasks"]] == ["team.r1"]


async def test_the_authenticator_checks_the_registration(
    api: httpx.AsyncClient, fake: FakeAuthenticator, service: SchedulerService
) -> None:
    fake.refuse_registration = "pod team/w1 has no tether.dev/pool label"
    refused = await register(api, "token-a", "w1")
    assert refused.status_code == 403
    assert refused.json()["message"] == "pod team/w1 has no tether.dev/pool label"
    assert service.workers() == [], "nothing registered"


async def test_a_worker_cannot_report_another_workers_task(
    api: httpx.AsyncClient, service: SchedulerService
) -> None:
    await register(api, "token-a", "w1")
    await register(api, "token-b", "w2")
    started = await api.post(
        "/v1/runs", json={"workflow": "wf", "run_id": "home.r1"}, headers=auth("alice")
    )
    assert started.status_code == 403, "alice may not create runs"
    run = StartRunRequest(workflow="wf", run_id="team.r1")
    run_id = service.start_run(run, namespace="team")["run_id"]
    polled = await api.post(
        "/v1/workers/w1/poll", json={"max_tasks": 1, "wait": 0}, headers=auth("token-a")
    )
    polled_w2 = await api.post(
        "/v1/workers/w2/poll", json={"max_tasks": 1, "wait": 0}, headers=auth("token-b")
    )
    (wf,) = polled.json()["tasks"] or polled_w2.json()["tasks"]
    owner, intruder = ("w1", "w2") if polled.json()["tasks"] else ("w2", "w1")
    tokens = {"w1": "token-a", "w2": "token-b"}
    report = commands(run_id, wf["task_id"], schedule(1), max_tasks=1).model_dump(mode="json")
    before = service.history(run_id)
    refused = await api.post(
        f"/v1/workers/{intruder}/report", json=report, headers=auth(tokens[intruder])
    )
    assert refused.status_code == 403
    assert refused.json()["field"] == "task_id"
    assert f"dispatched to worker {owner!r}" in refused.json()["message"]
    assert service.history(run_id) == before, "nothing changed"

    accepted = await api.post(
        f"/v1/workers/{owner}/report", json=report, headers=auth(tokens[owner])
    )
    assert accepted.status_code == 200, accepted.text
    (task,) = [t for t in service.engine.state.tasks.values() if t.kind == "activity"]
    task_id = task.task_id
    assert task.worker_id is not None
    owner, intruder = task.worker_id, "w2" if task.worker_id == "w1" else "w1"
    forged = {"task_id": task_id, "ok": True, "result": "forged"}
    before = service.history(run_id)
    for headers in (auth(tokens[intruder], worker=intruder), auth(tokens[intruder], worker=owner)):
        response = await api.post(f"/v1/tasks/{task_id}/complete", json=forged, headers=headers)
        assert response.status_code == 403, response.text
        beat = await api.post(
            f"/v1/tasks/{task_id}/heartbeat", json={"task_id": task_id}, headers=headers
        )
        assert beat.status_code == 403
    missing = await api.post(
        f"/v1/tasks/{task_id}/complete", json=forged, headers=auth(tokens[intruder])
    )
    assert missing.status_code == 403, "no X-Tether-Worker: no worker to act as"
    assert service.history(run_id) == before, "nothing changed"
    done = await api.post(
        f"/v1/tasks/{task_id}/complete",
        json={"task_id": task_id, "ok": True, "result": "real"},
        headers=auth(tokens[owner], worker=owner),
    )
    assert done.status_code == 200, done.text
    assert service.history(run_id)[-1]["type"] == "ActivityCompleted"


async def test_client_calls_need_the_verb_in_the_runs_namespace(
    api: httpx.AsyncClient, fake: FakeAuthenticator, service: SchedulerService
) -> None:
    await register(api, "token-a", "w1")
    body = {"workflow": "wf", "run_id": "team.r1"}
    refused = await api.post("/v1/runs", json=body, headers=auth("alice"))
    assert refused.status_code == 403
    message = refused.json()["message"]
    assert "user 'alice' may not create workflowruns in namespace 'team'" in message
    assert "Role" in message
    assert service.list_runs() == [], "nothing started"

    fake.grants |= {
        ("alice", "create", "workflowruns", "team"),
        ("alice", "get", "workflowruns", "team"),
        ("alice", "list", "workflowruns", "team"),
    }
    assert (await api.post("/v1/runs", json=body, headers=auth("alice"))).status_code == 201
    service.register_worker(RegisterWorkerRequest(**registration("o1", namespace="other")))
    service.start_run(StartRunRequest(workflow="wf", run_id="other.r2"), namespace="other")
    assert (await api.get("/v1/runs/team.r1", headers=auth("alice"))).status_code == 200
    assert (await api.get("/v1/runs/team.r1/history", headers=auth("alice"))).status_code == 200
    wait = await api.get("/v1/runs/team.r1/wait", params={"timeout": 0}, headers=auth("alice"))
    assert wait.status_code == 200
    assert (await api.get("/v1/runs/other.r2", headers=auth("alice"))).status_code == 403
    listed = await api.get("/v1/runs", headers=auth("alice"))
    assert [r["run_id"] for r in listed.json()["runs"]] == ["team.r1"], "only namespace team"
    cancel = await api.post("/v1/runs/team.r1/cancel", json={}, headers=auth("alice"))
    assert cancel.status_code == 403
    assert "may not delete workflowruns" in cancel.json()["message"]
    fake.grants.add(("alice", "delete", "workflowruns", "team"))
    assert (await api.post("/v1/runs/team.r1/cancel", json={}, headers=auth("alice"))).is_success
    assert service.get_run("team.r1")["phase"] == "Cancelled"


async def test_workers_and_workflows_are_listed_only_where_rbac_allows(
    api: httpx.AsyncClient, fake: FakeAuthenticator, service: SchedulerService
) -> None:
    await register(api, "token-a", "w1")  # team/w1
    service.register_worker(
        RegisterWorkerRequest(**registration("o1", namespace="other", workflows=[{"name": "x"}]))
    )

    async def listed() -> tuple[list[str], list[tuple[str, str]]]:
        workers = (await api.get("/v1/workers", headers=auth("alice"))).json()["workers"]
        flows = (await api.get("/v1/workflows", headers=auth("alice"))).json()["workflows"]
        return [w["worker_id"] for w in workers], [(f["namespace"], f["name"]) for f in flows]

    assert await listed() == ([], [])
    fake.grants |= {
        ("alice", "list", "workerpools", "team"),
        ("alice", "list", "workflows", "team"),
    }
    assert await listed() == (["w1"], [("team", "wf")]), "nothing of namespace other"


async def test_without_a_gate_the_api_is_open(service: SchedulerService) -> None:
    app = create_app(service, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client:
        assert (await client.get("/v1/runs")).status_code == 200
        registered = await client.post("/v1/workers", json=registration("w9"))
        assert registered.status_code == 200
