"""Workflow resources: their specs (run defaults) and their status from registrations.

`WorkflowDirectory` keeps the spec of every Workflow the operator watches, so a run
takes its defaults (sticky, scheduleTimeout, workerPool) from its Workflow.
`WorkflowPublisher` turns worker registrations into Workflow status: each workflow a
worker registers gets, in the worker's namespace (`RegisterWorkerRequest.namespace`,
from `TETHER_POD_NAMESPACE`), its Workflow's status filled — the activities with
their options and input schemas, the serving pods and pools, a `Ready` condition —
and a Workflow created, labelled `app.kubernetes.io/managed-by=tether`, when there
is none. Writes are coalesced per Workflow by a `StatusWriter`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.resources.conditions import merge_conditions
from tether_operator.k8s.resources.naming import pool_name
from tether_operator.k8s.resources.specs import (
    API_VERSION,
    ActivityOptions,
    RegisteredActivity,
    RetryPolicy,
    WorkflowSpec,
    format_duration,
    parse_duration,
)
from tether_operator.k8s.runs.mirror import StatusPatch, StatusWriter
from worker_runtime.protocol import ActivitySpec, RegisterWorkerRequest

__all__ = [
    "MANAGED_BY",
    "WorkflowDirectory",
    "WorkflowPublisher",
    "activity_record",
    "retry_defaults",
]

logger = logging.getLogger("tether.operator")

MANAGED_BY = {"app.kubernetes.io/managed-by": "tether"}
"""Labels of a Workflow the operator created because a worker registered its code."""

_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

Key = tuple[str, str]
SpecListener = Callable[[str, str, WorkflowSpec | None], None]
"""Told a Workflow's namespace, name and spec (None once it is gone)."""


class WorkflowDirectory:
    """The specs of the Workflows the operator watches, by (namespace, name)."""

    def __init__(self) -> None:
        self._specs: dict[Key, WorkflowSpec] = {}
        self._generations: dict[Key, int] = {}
        self._generation_listeners: list[Callable[[str, str], None]] = []
        self._spec_listeners: list[SpecListener] = []

    def on_generation(self, listener: Callable[[str, str], None]) -> None:
        """Call `listener(namespace, name)` whenever a Workflow's generation changes."""
        self._generation_listeners.append(listener)

    def subscribe(self, listener: SpecListener) -> None:
        """Call `listener(namespace, name, spec)` for every Workflow known now and on every
        later change of a spec (None: the Workflow was deleted or its spec is invalid)."""
        self._spec_listeners.append(listener)
        for key, spec in self._specs.items():
            listener(*key, spec)

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Take in one raw watch event of a Workflow."""
        body = event.get("object") or {}
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.get("type") == "DELETED":
            self._specs.pop(key, None)
            self._generations.pop(key, None)
            self._tell(key)
            return
        try:
            self._specs[key] = WorkflowSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            logger.warning("Workflow %s/%s has an invalid spec: %s", *key, exc)
            self._specs.pop(key, None)
        self._tell(key)
        generation = meta.get("generation")
        if isinstance(generation, int) and self._generations.get(key) != generation:
            self._generations[key] = generation
            for listener in self._generation_listeners:
                listener(*key)

    def _tell(self, key: Key) -> None:
        spec = self._specs.get(key)
        for listener in self._spec_listeners:
            listener(*key, spec)

    def generation(self, namespace: str, name: str) -> int | None:
        """The Workflow's `metadata.generation`, if the operator has seen it."""
        return self._generations.get((namespace, name))

    def spec(self, namespace: str, name: str) -> WorkflowSpec | None:
        """The Workflow's spec, or None if there is no such Workflow."""
        return self._specs.get((namespace, name))


def retry_defaults(spec: WorkflowSpec | None) -> dict[str, Any] | None:
    """The engine's retry fields (seconds for durations) that a Workflow's `spec.retry`
    sets for its activities: only those the user wrote; None if it sets none."""
    policy = spec.retry if spec is not None else None
    if policy is None:
        return None
    values = policy.model_dump()
    fields = {name: values[name] for name in policy.model_fields_set}
    for name in ("initial_interval", "max_interval"):
        if name in fields:
            fields[name] = parse_duration(fields[name])
    return fields or None


def _retry(policy: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=policy["max_attempts"],
        initial_interval=format_duration(policy["initial_interval"]),
        backoff_coefficient=policy["backoff_coefficient"],
        max_interval=format_duration(max(policy["max_interval"], policy["initial_interval"])),
        non_retryable_errors=list(policy.get("non_retryable_errors") or []),
    )


def activity_record(spec: ActivitySpec) -> dict[str, Any]:
    """A registered activity as a Workflow status lists it (camelCase, no nulls)."""
    opts = spec.options
    record = RegisteredActivity(
        name=spec.name,
        options=ActivityOptions(
            start_to_close_timeout=format_duration(opts.start_to_close_timeout)
            if opts.start_to_close_timeout
            else None,
            heartbeat_timeout=format_duration(opts.heartbeat_timeout)
            if opts.heartbeat_timeout
            else None,
            retry=_retry(opts.retry.model_dump()),
            sticky_to_worker=opts.sticky_to_worker,
        ),
        input_schema=spec.input_schema,
    )
    return record.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass
class _Registration:
    namespace: str
    pool: str
    pod: str
    request: RegisterWorkerRequest


@dataclass
class _Published:
    conditions: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] | None = None
    exists: bool = False


class WorkflowPublisher:
    """Fills Workflow status from worker registrations; creates managed Workflows."""

    def __init__(
        self,
        client: KubeClient,
        alive: Callable[[], set[str]],
        directory: WorkflowDirectory,
        *,
        default_namespace: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._alive = alive
        self._directory = directory
        self._default_namespace = default_namespace
        self._clock = clock
        self._workers: dict[str, _Registration] = {}
        self._published: dict[Key, _Published] = {}
        self._creating: dict[Key, asyncio.Task[None]] = {}
        self.writer = StatusWriter(client, self._compute, self._written, self._gone)
        directory.on_generation(self.spec_changed)

    @staticmethod
    def _key(key: str) -> Key:
        namespace, _, name = key.partition("/")
        return namespace, name

    def registered(self, req: RegisterWorkerRequest) -> None:
        """A worker registered: publish every workflow it serves."""
        namespace = getattr(req, "namespace", "") or self._default_namespace
        pool = pool_name(req.pool)
        self._workers[req.worker_id] = _Registration(namespace, pool, req.pod, req)
        for wf in req.workflows:
            self._touch(namespace, wf.name)

    def workers_changed(self) -> None:
        """Some worker came or went: republish every workflow (Ready, pods, pools)."""
        for reg in self._workers.values():
            for wf in reg.request.workflows:
                self._touch(reg.namespace, wf.name)

    def spec_changed(self, namespace: str, name: str) -> None:
        """A Workflow's spec changed: its status gets the new observedGeneration."""
        if (namespace, name) in self._published:
            self.writer.mark(f"{namespace}/{name}")

    def _touch(self, namespace: str, name: str) -> None:
        if not _OBJECT_NAME.fullmatch(name) or len(name) > 253:
            logger.warning(
                "workflow %r is not a Kubernetes object name: no Workflow resource for it", name
            )
            return
        key = (namespace, name)
        state = self._published.setdefault(key, _Published())
        if not state.exists and key not in self._creating:
            self._creating[key] = asyncio.get_running_loop().create_task(
                self._ensure(key), name=f"tether-workflow-{namespace}-{name}"
            )
            return
        self.writer.mark(f"{namespace}/{name}")

    async def _ensure(self, key: Key) -> None:
        """Create the Workflow if it does not exist, then publish its status."""
        namespace, name = key
        path = paths.workflows(namespace)
        try:
            await self._client.get(f"{path}/{name}")
        except ApiError as exc:
            if not exc.not_found:
                logger.warning("could not read Workflow %s/%s: %s", namespace, name, exc)
                self._creating.pop(key, None)
                return
            body = {
                "apiVersion": API_VERSION,
                "kind": "Workflow",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
                "spec": {},
            }
            try:
                await self._client.create(path, body)
                logger.info("created Workflow %s/%s for its registered code", namespace, name)
            except ApiError as create_exc:
                if not create_exc.conflict:
                    logger.warning(
                        "could not create Workflow %s/%s: %s", namespace, name, create_exc
                    )
                    self._creating.pop(key, None)
                    return
        except Exception as exc:
            logger.warning("could not read Workflow %s/%s: %s", namespace, name, exc)
            self._creating.pop(key, None)
            return
        self._published.setdefault(key, _Published()).exists = True
        self._creating.pop(key, None)
        self.writer.mark(f"{namespace}/{name}")

    def _compute(self, key_text: str) -> StatusPatch | None:
        namespace, name = self._key(key_text)
        state = self._published.get((namespace, name))
        if state is None or not state.exists:
            return None
        alive = self._alive()
        serving = [
            r
            for wid, r in self._workers.items()
            if r.namespace == namespace
            and wid in alive
            and any(wf.name == name for wf in r.request.workflows)
        ]
        latest = next(
            (
                r
                for r in reversed(list(self._workers.values()))
                if r.namespace == namespace and any(wf.name == name for wf in r.request.workflows)
            ),
            None,
        )
        if latest is None:
            return None
        spec = next(wf for wf in latest.request.workflows if wf.name == name)
        activities = {a.name: a for a in latest.request.activities}
        pods = sorted({r.pod for r in serving})
        pools = sorted({r.pool for r in serving if r.pool})
        if pods:
            ready = (
                "True",
                "WorkersRegistered",
                f"served by {len(pods)} pod(s): {', '.join(pods)}",
            )
        else:
            ready = ("False", "NoWorkers", "no live worker serves this workflow")
        conditions = merge_conditions(
            [
                {
                    "type": "Ready",
                    "status": ready[0],
                    "reason": ready[1],
                    "message": ready[2],
                }
            ],
            state.conditions,
            self._clock(),
        )
        generation = self._directory.generation(namespace, name)
        if generation is not None:
            for cond in conditions:
                cond["observedGeneration"] = generation
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": conditions,
            "sticky": spec.sticky,
            "inputSchema": spec.input_schema,
            "activities": [activity_record(a) for _, a in sorted(activities.items())],
            "activityCount": len(activities),
            "servingPools": ",".join(pools),
            "pods": pods,
        }
        if status == state.status:
            return None
        path = paths.workflows(namespace, name, "status")
        return StatusPatch(path, status)

    def _written(self, key_text: str, status: dict[str, Any]) -> None:
        state = self._published.setdefault(self._key(key_text), _Published())
        state.status = status
        state.conditions = status["conditions"]

    def _gone(self, key_text: str) -> None:
        # Deleted meanwhile: created again on the next registration.
        self._published.pop(self._key(key_text), None)
