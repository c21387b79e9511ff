"""Node loss: workers on a node that is not Ready, or that was deleted, are lost.

A watch on nodes (cluster-scoped, also when the operator serves only some
namespaces). When a node's `Ready` condition is not `True` (`False`, or `Unknown`
once the node controller stops hearing from its kubelet) or the node is deleted,
every worker the scheduler knows on that node is reported lost with reason
`NodeLost`, in the watch handler itself. `NodeLost` is not permanent: a HARD session
waits for its pod until `scheduleTimeout` (the node may come back); the pod's later
deletion (taint-based eviction) refines it to `PodDeleted`.

Each worker is reported once per NotReady spell of its node; a node that is Ready
again starts a new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from tether_operator.engine import EngineError
from tether_operator.k8s.context import OperatorContext
from tether_operator.scheduler import SchedulerService
from tether_types.views import WorkerFacts
from tether_types.wire import is_permanent_loss

__all__ = ["NodeWatch", "node_trouble", "register_handlers", "setup"]

logger = logging.getLogger("tether.nodes")


def node_trouble(event_type: str | None, node: dict[str, Any]) -> str | None:
    """Why the node's workers are lost ("node N is NotReady (...)"), or None while it is
    Ready."""
    name = node["metadata"]["name"]
    if event_type == "DELETED":
        return f"node {name} was deleted"
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") != "Ready":
            continue
        if c.get("status") == "True":
            return None
        state = "NotReady" if c.get("status") == "False" else "unreachable (Ready=Unknown)"
        why = ": ".join(part for part in (c.get("reason"), c.get("message")) if part)
        return f"node {name} is {state}" + (f" ({why})" if why else "")
    return None  # no Ready condition yet: a node still joining


@dataclass
class NodeWatch:
    """Reports the workers of troubled nodes lost (`NodeLost`)."""

    service: SchedulerService
    reported: dict[str, set[str]] = field(default_factory=dict)
    """Per troubled node: the workers reported lost since it last was Ready."""

    def on_node_event(self, event_type: str | None, node: dict[str, Any]) -> None:
        """A watch event of a node (`event_type` None for the initial listing)."""
        name = node["metadata"]["name"]
        trouble = node_trouble(event_type, node)
        if trouble is None:
            self.reported.pop(name, None)
            return
        done = self.reported.setdefault(name, set())
        for w in self.service.worker_facts():
            if w.node != name or w.worker_id in done:
                continue
            if _known(w):
                done.add(w.worker_id)
                continue
            message = f"pod {w.pod} lost with its node: {trouble}"
            try:
                self.service.worker_lost(w.worker_id, "NodeLost", message)
            except EngineError as exc:
                logger.warning("reporting worker %s lost with node %s: %s", w.worker_id, name, exc)
                continue
            done.add(w.worker_id)
            logger.info("worker %s lost: %s", w.worker_id, trouble)
        if event_type == "DELETED":
            self.reported.pop(name, None)


def _known(w: WorkerFacts) -> bool:
    """The scheduler already has the worker lost with its node, or for good."""
    reason = w.lost_reason
    return (
        not w.alive and reason is not None and (reason == "NodeLost" or is_permanent_loss(reason))
    )


def register_handlers(registry: kopf.OperatorRegistry, watch: NodeWatch) -> None:
    """Feed `watch` the raw watch events of nodes (`kopf.on.event`: kopf keeps no state
    on them; nodes are cluster-scoped, so kopf watches them cluster-wide)."""

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def _node_event(event: kopf.RawEvent, **_: Any) -> None:
        watch.on_node_event(event["type"], dict(event["object"]))


def setup(registry: kopf.OperatorRegistry, context: OperatorContext) -> NodeWatch:
    """Plug the node watch into the operator (its controller seam)."""
    watch = NodeWatch(context.service)
    register_handlers(registry, watch)
    return watch
