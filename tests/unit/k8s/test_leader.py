"""`LeaderElector` at the httpx seam: a fake Lease API that keeps resourceVersions like
the apiserver (a PUT with a stale one is a 409). tests/e2e/test_leader_k8s.py runs the
elector against a real apiserver."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import pytest

from tether_operator.k8s.access.leader import (
    LeaderElector,
    LeadershipLost,
    LeaseSettings,
    new_identity,
)
from tether_operator.k8s.api.client import KubeClient, KubeConfig

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/tether"


class FakeLeases:
    """One namespace's Leases with optimistic concurrency; `fail` makes every call 503."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.fail = False
        self.writes: list[dict[str, Any]] = []
        self.pods: set[str] = set()
        """Pods that exist in the namespace (GET /api/v1/namespaces/ns/pods/NAME)."""
        self.pod_gets = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            return httpx.Response(503, json={"kind": "Status", "reason": "ServiceUnavailable"})
        name = request.url.path.rsplit("/", 1)[-1]
        if "/pods/" in request.url.path:
            self.pod_gets += 1
            if name in self.pods:
                return httpx.Response(200, json={"metadata": {"name": name}})
            return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
        if request.method == "GET":
            if name not in self.leases:
                return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
            return httpx.Response(200, json=self.leases[name])
        body = json.loads(request.content)
        self.writes.append(copy.deepcopy(body))
        if request.method == "POST":
            name = body["metadata"]["name"]
            if name in self.leases:
                return httpx.Response(409, json={"kind": "Status", "reason": "AlreadyExists"})
            body["metadata"]["uid"] = f"uid-{name}"
        elif request.method == "PUT":
            current = self.leases.get(name)
            if current is None:
                return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return httpx.Response(409, json={"kind": "Status", "reason": "Conflict"})
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.leases[name] = body
        return httpx.Response(200, json=body)

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.leases["tether"]["spec"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(
    api: FakeLeases,
    clock: Clock,
    name: str,
    changes: list[tuple[bool, str]] | None = None,
    pod: str = "",
) -> LeaderElector:
    client = KubeClient(KubeConfig(server="http://k8s"), transport=httpx.MockTransport(api))
    settings = LeaseSettings(
        name="tether",
        namespace="ns",
        identity=name,
        lease_duration=15,
        renew_deadline=10,
        retry_period=0.001,
        pod=pod,
    )
    return LeaderElector(
        client,
        settings,
        monotonic=clock,
        on_change=(lambda leading, msg: changes.append((leading, msg)))
        if changes is not None
        else None,
    )


def test_identities_are_unique_per_process_and_name_the_pod() -> None:
    a, b = new_identity("op-1"), new_identity("op-1")
    assert a != b
    assert a.startswith("op-1_")
    assert b.startswith("op-1_")


def test_settings_refuse_a_renew_deadline_that_outlives_the_lease() -> None:
    with pytest.raises(ValueError, match=r"renew deadline .* must be shorter than the lease"):
        LeaseSettings(name="x", identity="a", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match=r"retry period .* must be shorter"):
        LeaseSettings(name="x", identity="a", lease_duration=15, renew_deadline=2, retry_period=2)


async def test_the_first_candidate_creates_the_lease_at_epoch_zero() -> None:
    api, clock, changes = FakeLeases(), Clock(), []
    a = elector(api, clock, "a", changes)
    assert await a.acquire() == 0
    assert api.spec["holderIdentity"] == "a"
    assert api.spec["leaseTransitions"] == 0
    assert api.spec["leaseDurationSeconds"] == 15
    assert a.leading
    assert await a.confirm()
    assert changes == [(True, "a leads (lease ns/tether, epoch 0)")]


async def test_a_standby_waits_while_the_holder_renews_and_takes_over_when_it_stops() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    await a.acquire()
    assert not await b._try()  # first sight of the record
    clock.now += 14
    assert await a._try()  # a renews: the record changes
    clock.now += 14
    assert not await b._try(), "a renewed 14 s ago: its lease is live"
    clock.now += 15.5  # a is silent for a full lease duration, by b's clock
    assert await b._try()
    assert b.epoch == 1
    assert api.spec["holderIdentity"] == "b"
    assert api.spec["leaseTransitions"] == 1
    with pytest.raises(LeadershipLost, match="held by b now"):
        await a._try()
    assert not a.leading
    assert a.epoch is None


async def test_a_released_lease_is_taken_at_once_with_a_new_epoch() -> None:
    api, clock, changes = FakeLeases(), Clock(), []
    a, b = elector(api, clock, "a", changes), elector(api, clock, "b")
    await a.acquire()
    assert not await b._try()
    await a.release()
    assert api.spec["holderIdentity"] == ""
    assert changes[-1] == (False, "a released lease ns/tether (epoch 0)")
    assert await b._try(), "no wait for the lease duration after a release"
    assert b.epoch == 1


async def test_of_two_candidates_racing_for_a_free_lease_one_wins() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    await a.acquire()
    await a.release()
    results = await asyncio.gather(b._try(), elector(api, clock, "c")._try())
    assert sorted(results) == [False, True]
    assert api.spec["leaseTransitions"] == 1


async def test_a_leader_that_cannot_renew_gives_up_at_the_renew_deadline() -> None:
    api, clock, changes = FakeLeases(), Clock(), []
    a = elector(api, clock, "a", changes)
    await a.acquire()
    api.fail = True
    clock.now += 9.9
    assert a.leading
    hold = asyncio.create_task(a.hold())
    await asyncio.sleep(0.05)
    assert not hold.done(), "still inside the renew deadline"
    clock.now += 0.2
    with pytest.raises(LeadershipLost, match="no renewal of lease ns/tether for 10s"):
        await asyncio.wait_for(hold, 5)
    assert not a.leading
    assert changes[-1][0] is False


async def test_a_deleted_lease_deposes_its_leader() -> None:
    api, clock = FakeLeases(), Clock()
    a = elector(api, clock, "a")
    await a.acquire()
    del api.leases["tether"]
    with pytest.raises(LeadershipLost, match="was deleted"):
        await a._try()


async def test_renewing_keeps_the_epoch_and_the_acquire_time() -> None:
    api, clock = FakeLeases(), Clock()
    a = elector(api, clock, "a")
    await a.acquire()
    acquired = api.spec["acquireTime"]
    clock.now += 3
    assert await a._try()
    assert api.spec["acquireTime"] == acquired
    assert api.spec["leaseTransitions"] == 0
    assert a.epoch == 0


async def test_a_lease_held_by_a_pod_that_is_gone_is_taken_at_once() -> None:
    """After `helm uninstall`, the old leader's Lease stays (its RBAC went first, so it
    could not release it): the next install's candidate takes it without waiting."""
    api, clock = FakeLeases(), Clock()
    old = elector(api, clock, "op-old_1", pod="op-old")
    api.pods.add("op-old")
    await old.acquire()
    assert api.leases["tether"]["metadata"]["annotations"] == {"tether.dev/holder-pod": "op-old"}
    standby = elector(api, clock, "op-new_2", pod="op-new")
    assert not await asyncio.wait_for(standby._try(), 1), "its pod exists: a live holder"
    assert not await standby._try()
    assert api.pod_gets == 1, "asked once per holder, not every round"
    api.pods.discard("op-old")  # uninstalled; the record is fresh, nobody renews it
    fresh = elector(api, clock, "op-new_3", pod="op-new")
    assert await asyncio.wait_for(fresh.acquire(), 1) == 1
    assert api.spec["holderIdentity"] == "op-new_3"
    assert api.leases["tether"]["metadata"]["annotations"] == {"tether.dev/holder-pod": "op-new"}


async def test_a_holder_outside_kubernetes_is_never_looked_up() -> None:
    api, clock = FakeLeases(), Clock()
    await elector(api, clock, "laptop_1").acquire()
    assert (
        "annotations" not in api.leases["tether"]["metadata"]
        or not api.leases["tether"]["metadata"]["annotations"]
    )
    assert not await elector(api, clock, "op_2", pod="op")._try()
    assert api.pod_gets == 0


async def test_a_standby_knows_whether_a_live_candidate_leads() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert not b.held_elsewhere, "nothing seen yet"
    await a.acquire()
    assert not await b._try()
    assert b.held_elsewhere
    assert not a.held_elsewhere, "a leads itself"
    clock.now += 16  # a stopped renewing: its record is older than the lease duration
    assert not b.held_elsewhere
