"""How many pods a WorkerPool wants, and which pods scale-down removes first."""

from __future__ import annotations

from typing import Any

from tether_operator.engine import Demand, WorkerLoad
from tether_operator.k8s.pools.scaling import (
    PodState,
    Target,
    autoscale_target,
    clamp,
    scale_down_order,
)
from tether_operator.k8s.resources.specs import WorkerPoolSpec

TEMPLATE = {"spec": {"containers": [{"name": "worker", "image": "tether:dev"}]}}
IDLE = WorkerLoad(tasks=0, sessions=0)


def spec(**fields: Any) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate({"template": TEMPLATE, **fields})


def auto(**fields: Any) -> WorkerPoolSpec:
    return spec(
        autoscale=True, replicas=0, maxReplicas=4, slots=2, sessionCapacity=2, idleTimeout="30s"
    ).model_copy(update=fields)


def pod(
    name: str, load: WorkerLoad | None = IDLE, idle_for: float = 0.0, created: float = 0.0
) -> PodState:
    return PodState(name=name, created_at=created, load=load, idle_for=idle_for)


def test_clamp_keeps_replicas_within_the_limits() -> None:
    s = spec(replicas=2, minReplicas=1, maxReplicas=3)
    assert clamp(s, 2) == Target(2)
    assert clamp(s, 0) == Target(1, "held at minReplicas=1 (wanted 0)")
    assert clamp(s, 9) == Target(3, "held at maxReplicas=3 (wanted 9)")
    assert clamp(spec(replicas=0), 0) == Target(0)


def test_autoscale_from_zero_when_work_waits() -> None:
    assert autoscale_target(auto(), [], Demand(queued=1)).replicas == 1
    assert autoscale_target(auto(), [], Demand(queued=3)).replicas == 2  # 2 slots a pod
    assert autoscale_target(auto(), [], Demand(sessions_waiting=3)).replicas == 2
    assert autoscale_target(auto(), [], Demand(queued=1, sessions_waiting=1)).replicas == 2


def test_autoscale_stops_at_max_replicas_and_says_so() -> None:
    target = autoscale_target(auto(), [], Demand(queued=50))
    assert target == Target(4, "held at maxReplicas=4 (wanted 25)")


def test_pods_still_starting_are_not_added_again() -> None:
    starting = [pod("a", load=None)]
    assert autoscale_target(auto(), starting, Demand(queued=1)).replicas == 1
    busy = [pod("a", WorkerLoad(tasks=2, sessions=0)), pod("b", load=None)]
    assert autoscale_target(auto(), busy, Demand(queued=2)).replicas == 2
    assert autoscale_target(auto(), busy, Demand(queued=3)).replicas == 3


def test_demand_never_shrinks_the_pool() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    assert autoscale_target(auto(), pods, Demand(queued=1)).replicas == 3


def test_idle_pods_go_after_the_idle_timeout() -> None:
    pods = [
        pod("busy", WorkerLoad(tasks=1, sessions=0), idle_for=0),
        pod("fresh", idle_for=10),
        pod("stale", idle_for=31),
        pod("never-registered", load=None, idle_for=45),
    ]
    # Two pods are past the idle timeout: one goes now, the other at the next decision.
    assert autoscale_target(auto(), pods, Demand()).replicas == 3
    assert autoscale_target(auto(), pods, None).replicas == 3
    assert autoscale_target(auto(), pods[:3], None).replicas == 2
    assert autoscale_target(auto(), [pod("x", idle_for=99)], None).replicas == 0
    held = autoscale_target(auto(min_replicas=1), [pod("x", idle_for=99)], None)
    assert held == Target(1, "held at minReplicas=1 (wanted 0)")


def test_hard_sessions_waiting_do_not_add_pods() -> None:
    assert autoscale_target(auto(), [], Demand(hard_waiting=2)).replicas == 0


def test_scale_down_removes_idle_pods_first_then_the_least_loaded_newest_first() -> None:
    pods = [
        pod("session", WorkerLoad(tasks=0, sessions=1), created=1),
        pod("old-idle", created=1),
        pod("two-tasks", WorkerLoad(tasks=2, sessions=0), created=5),
        pod("new-idle", created=9),
        pod("starting", load=None, created=8),
        pod("one-task", WorkerLoad(tasks=1, sessions=0), created=2),
    ]
    order = [p.name for p in scale_down_order(pods)]
    assert order == ["new-idle", "starting", "old-idle", "one-task", "two-tasks", "session"]


def test_a_pod_pinned_by_a_session_whose_worker_is_away_is_busy_and_goes_last() -> None:
    away = PodState(name="away", created_at=0.0, load=None, idle_for=0.0, pinned=frozenset({"s"}))
    unregistered = pod("new", load=None, created=5.0)
    busy = pod("busy", WorkerLoad(tasks=2, sessions=0))
    assert away.busy
    assert away.sessions == 1
    assert [p.name for p in scale_down_order([away, busy, unregistered])] == [
        "new",
        "busy",
        "away",
    ]
