"""`k8s/access/auth.py` over an httpx MockTransport (the seam we own): TokenReview for worker and
client tokens, SubjectAccessReview, the registration check, and the brief, bounded cache."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tether_operator.k8s.access.auth import KubernetesAuthenticator, run_namespace, token_expiry
from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.scheduler.auth import (
    AuthUnavailable,
    Forbidden,
    PodIdentity,
    Principal,
    Unauthenticated,
)
from worker_runtime.protocol import RegisterWorkerRequest

POD_EXTRA = {
    "authentication.kubernetes.io/pod-name": ["w1"],
    "authentication.kubernetes.io/pod-uid": ["uid-1"],
}
WORKER_USER = {
    "username": "system:serviceaccount:team:default",
    "uid": "sa-uid",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:team"],
    "extra": POD_EXTRA,
}


def jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=")
    return f"eyJhbGciOiJSUzI1NiJ9.{payload.decode()}.c2ln"


@dataclass
class FakeApiServer:
    """What the API server answers, and every request it got."""

    tokens: dict[str, tuple[str | None, dict[str, Any]]] = field(default_factory=dict)
    """token -> (audience it was issued for, None: the API server's; user)."""
    grants: set[tuple[str, str, str | None]] = field(default_factory=set)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail: int | None = None
    requests: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.url.path, body))
        if self.fail is not None:
            return httpx.Response(self.fail, json={"kind": "Status", "reason": "InternalError"})
        if request.url.path.endswith("/tokenreviews"):
            assert body is not None
            audiences = body["spec"].get("audiences")
            issued = self.tokens.get(body["spec"]["token"])
            if issued is None or (audiences or [None]) != [issued[0]]:
                status = {"authenticated": False, "error": "invalid bearer token"}
            else:
                status = {"authenticated": True, "user": issued[1], "audiences": audiences}
            return httpx.Response(201, json={**body, "status": status})
        if request.url.path.endswith("/subjectaccessreviews"):
            assert body is not None
            attrs = body["spec"]["resourceAttributes"]
            allowed = (body["spec"]["user"], attrs["verb"], attrs.get("namespace")) in self.grants
            return httpx.Response(201, json={**body, "status": {"allowed": allowed}})
        parts = request.url.path.split("/")  # /api/v1/namespaces/NS/pods/NAME
        pod = self.pods.get((parts[4], parts[6]))
        if pod is None:
            return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
        return httpx.Response(200, json=pod)

    def reviews(self, kind: str) -> int:
        return sum(1 for path, _ in self.requests if path.endswith(kind))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(server: FakeApiServer, clock: Clock) -> Callable[..., KubernetesAuthenticator]:
    def build(**kwargs: Any) -> KubernetesAuthenticator:
        client = KubeClient(
            KubeConfig(server="https://api"), transport=httpx.MockTransport(server.handle)
        )
        return KubernetesAuthenticator(client, clock=clock, **kwargs)

    return build


async def test_a_worker_token_is_its_pod(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator]
) -> None:
    server.tokens["t"] = ("tether.dev/scheduler", WORKER_USER)
    principal = await make().authenticate("t")
    assert principal.pod == PodIdentity("team", "w1", "uid-1")
    assert principal.username == "system:serviceaccount:team:default"
    assert principal.groups == ("system:serviceaccounts", "system:serviceaccounts:team")
    (review,) = [body for path, body in server.requests if path.endswith("tokenreviews")]
    assert review is not None
    assert review["spec"]["audiences"] == ["tether.dev/scheduler"]


async def test_a_token_for_the_api_server_is_a_client_never_a_pod(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator]
) -> None:
    server.tokens["t"] = (None, WORKER_USER)  # the pod's own API token, bound to it
    principal = await make().authenticate("t")
    assert principal.pod is None, "only the scheduler's audience acts as a pod"
    assert principal.username == "system:serviceaccount:team:default"
    audiences = [b["spec"].get("audiences") for p, b in server.requests if b is not None]
    assert audiences == [["tether.dev/scheduler"], None]


async def test_a_refused_token_is_401_and_asked_again_after_a_few_seconds(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator], clock: Clock
) -> None:
    auth = make()
    with pytest.raises(Unauthenticated, match="refused: invalid bearer token"):
        await auth.authenticate("forged")
    with pytest.raises(Unauthenticated):
        await auth.authenticate("forged")
    assert server.reviews("tokenreviews") == 2, "both audiences once; the refusal cached"
    clock.now += 6
    with pytest.raises(Unauthenticated):
        await auth.authenticate("forged")
    assert server.reviews("tokenreviews") == 4


async def test_accepted_tokens_are_cached_for_a_minute_but_not_past_their_expiry(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator], clock: Clock
) -> None:
    auth = make()
    long_lived, short_lived = jwt(clock.now + 3600), jwt(clock.now + 10)
    for token in (long_lived, short_lived):
        server.tokens[token] = ("tether.dev/scheduler", WORKER_USER)
        await auth.authenticate(token)
    clock.now += 30
    for token in (long_lived, short_lived):
        await auth.authenticate(token)
    assert server.reviews("tokenreviews") == 3, "the short-lived token was asked again"
    clock.now += 31
    await auth.authenticate(long_lived)
    assert server.reviews("tokenreviews") == 4


async def test_concurrent_requests_with_one_token_share_one_review(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator]
) -> None:
    server.tokens["t"] = ("tether.dev/scheduler", WORKER_USER)
    auth = make()
    principals = await asyncio.gather(*(auth.authenticate("t") for _ in range(20)))
    assert len(set(principals)) == 1
    assert server.reviews("tokenreviews") == 1


async def test_the_cache_is_bounded_and_keyed_by_a_hash(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator]
) -> None:
    auth = make(max_entries=2)
    for token in ("t1", "t2", "t3"):
        server.tokens[token] = ("tether.dev/scheduler", WORKER_USER)
        await auth.authenticate(token)
    assert len(auth._tokens) == 2
    assert all(len(key) == 32 for key in auth._tokens._entries), "SHA-256 digests"
    await auth.authenticate("t1")
    assert server.reviews("tokenreviews") == 4, "the oldest was evicted"


async def test_an_api_server_that_cannot_answer_is_503_and_not_cached(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator]
) -> None:
    server.tokens["t"] = ("tether.dev/scheduler", WORKER_USER)
    server.fail = 500
    auth = make()
    with pytest.raises(AuthUnavailable, match="retry") as err:
        await auth.authenticate("t")
    assert err.value.status == 503
    server.fail = None
    assert (await auth.authenticate("t")).pod is not None


async def test_access_reviews_name_the_user_and_the_resource(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator], clock: Clock
) -> None:
    auth = make()
    alice = Principal(
        username="alice", uid="u1", groups=("dev",), extra={"scopes": ("a",)}, pod=None
    )
    assert not await auth.allows(alice, "create", "workflowruns", "team")
    server.grants.add(("alice", "create", "team"))
    assert not await auth.allows(alice, "create", "workflowruns", "team"), "denial cached"
    clock.now += 6
    assert await auth.allows(alice, "create", "workflowruns", "team")
    assert await auth.allows(alice, "create", "workflowruns", "team")
    assert server.reviews("subjectaccessreviews") == 2
    body = next(b for p, b in server.requests if p.endswith("subjectaccessreviews"))
    assert body is not None
    assert body["spec"] == {
        "user": "alice",
        "uid": "u1",
        "groups": ["dev"],
        "extra": {"scopes": ["a"]},
        "resourceAttributes": {
            "group": "tether.dev",
            "resource": "workflowruns",
            "verb": "create",
            "namespace": "team",
        },
    }
    await auth.allows(alice, "list", "workerpools", None)
    last = server.requests[-1][1]
    assert last is not None
    assert "namespace" not in last["spec"]["resourceAttributes"], "cluster-wide"


def worker_pod(uid: str = "uid-1", pool: str | None = "gpu") -> dict[str, Any]:
    labels = {"tether.dev/pool": pool} if pool else {}
    return {"metadata": {"name": "w1", "namespace": "team", "uid": uid, "labels": labels}}


def registration(**extra: Any) -> RegisterWorkerRequest:
    fields: dict[str, Any] = {
        "worker_id": "w1",
        "pod": "w1",
        "incarnation": "i",
        "pool": "team.gpu",
        "namespace": "team",
    }
    return RegisterWorkerRequest.model_validate({**fields, **extra})


WORKER = Principal(username=WORKER_USER["username"], pod=PodIdentity("team", "w1", "uid-1"))


async def test_a_pool_pod_registers_with_its_pool(
    server: FakeApiServer, make: Callable[..., KubernetesAuthenticator]
) -> None:
    server.pods[("team", "w1")] = worker_pod()
    await make(namespaces=["team"]).check_registration(WORKER, registration())


@pytest.mark.parametrize(
    ("pod", "req", "served", "message"),
    [
        (worker_pod(), {"pool": "team.cpu"}, (), "belongs to pool 'team.gpu'.*TETHER_POOL"),
        (worker_pod(), {"pool": "other.gpu"}, (), "may not register with pool 'other.gpu'"),
        (worker_pod(), {"namespace": "other"}, (), "may not register for namespace 'other'"),
        (worker_pod(uid="uid-2"), {}, (), "not the token's 'uid-1'"),
        (worker_pod(pool=None), {}, (), "no tether.dev/pool label"),
        (None, {}, (), "does not exist"),
        (worker_pod(), {}, ("prod",), "namespace 'team', which this operator does not serve"),
    ],
)
async def test_a_registration_that_does_not_fit_the_pod_is_forbidden(
    server: FakeApiServer,
    make: Callable[..., KubernetesAuthenticator],
    pod: dict[str, Any] | None,
    req: dict[str, Any],
    served: tuple[str, ...],
    message: str,
) -> None:
    if pod is not None:
        server.pods[("team", "w1")] = pod
    with pytest.raises(Forbidden, match=message):
        await make(namespaces=served).check_registration(WORKER, registration(**req))


async def test_a_user_token_may_not_register(make: Callable[..., KubernetesAuthenticator]) -> None:
    with pytest.raises(Forbidden, match="not a pod"):
        await make().check_registration(Principal(username="alice"), registration())


def test_run_ids_name_their_namespace() -> None:
    namespace_of = run_namespace("tether-system")
    assert namespace_of("team.run-1") == "team"
    assert namespace_of("generated-id") == "tether-system"
    assert namespace_of("") == "tether-system"


def test_token_expiry_reads_the_exp_claim_only_of_a_jwt() -> None:
    assert token_expiry(jwt(1234.0)) == 1234.0
    assert token_expiry("opaque-token") is None
    assert token_expiry("a.!!!.c") is None
