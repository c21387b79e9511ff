"""Every API path the operator reads or writes, in one place: a function per resource.

Each takes the namespace (None: every namespace, for a list), the object's name (None:
the collection) and a subresource (`status`).
"""

from __future__ import annotations

from tether_operator.k8s.api.client import resource_path
from tether_operator.k8s.resources.specs import API_VERSION

__all__ = [
    "configmaps",
    "events",
    "leases",
    "pods",
    "worker_pools",
    "workflow_runs",
    "workflow_schedules",
    "workflows",
]

LEASE_API_VERSION = "coordination.k8s.io/v1"


def pods(namespace: str | None = None, name: str | None = None) -> str:
    return resource_path("v1", "pods", namespace, name)


def configmaps(namespace: str | None = None, name: str | None = None) -> str:
    return resource_path("v1", "configmaps", namespace, name)


def events(namespace: str) -> str:
    return resource_path("v1", "events", namespace)


def leases(namespace: str, name: str | None = None) -> str:
    return resource_path(LEASE_API_VERSION, "leases", namespace, name)


def workflow_runs(
    namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    return resource_path(API_VERSION, "workflowruns", namespace, name, subresource)


def workflows(
    namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    return resource_path(API_VERSION, "workflows", namespace, name, subresource)


def worker_pools(
    namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    return resource_path(API_VERSION, "workerpools", namespace, name, subresource)


def workflow_schedules(
    namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    return resource_path(API_VERSION, "workflowschedules", namespace, name, subresource)
