"""`POST /v1/runs` on Kubernetes: the run becomes a WorkflowRun, then starts as any other.

A run started over HTTP must have a WorkflowRun: its history ConfigMaps are owned by
one (`store/history.py`), and a run without one would lose its history. So the operator
creates the WorkflowRun (through its own `KubeClient`; the caller's right to create
workflowruns in that namespace was checked by the auth gate) and answers once the
WorkflowRun controller has bound and started it and its first history is stored:
the same `RunView` as in dev mode, with run id `<namespace>.<name>`.

Where the run goes: `run_id` `<namespace>.<name>` names both; a `run_id` without a
dot is a name in `namespace` (the request's field), else the operator's own; no
`run_id`: a generated name (`<workflow>-xxxxx`) there.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

from tether_operator.engine import InvalidCommand, RunAlreadyExists, RunNotFound
from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.resources.naming import pool_object, run_id_for, run_object
from tether_operator.k8s.resources.specs import API_VERSION, format_duration
from tether_operator.k8s.runs.controller import RunController
from tether_operator.k8s.runs.status import view_of_object
from tether_operator.scheduler.run_starter import RunNotStarted
from tether_types.views import RunViewData
from worker_runtime.protocol import StartRunRequest

__all__ = ["START_TIMEOUT", "ApiRunStarter", "workflow_run_for"]

logger = logging.getLogger("tether.operator")

START_TIMEOUT = 30.0
"""How long `POST /v1/runs` waits for the controller to start the WorkflowRun it made."""
_SLUG = re.compile(r"[^a-z0-9-]+")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _placement(req: StartRunRequest, default_namespace: str) -> tuple[str, str | None]:
    """`(namespace, name)` of the WorkflowRun for `req` (name None: generated)."""
    default = req.namespace or default_namespace
    if req.run_id is None:
        return default, None
    try:
        namespace, name = run_object(req.run_id)
    except ValueError:
        return default, req.run_id
    if req.namespace and namespace != req.namespace:
        raise InvalidCommand(
            f"run_id {req.run_id!r} names namespace {namespace}, but namespace is "
            f"{req.namespace}: give one of them",
            field="namespace",
        )
    return namespace, name


def workflow_run_for(req: StartRunRequest, default_namespace: str) -> dict[str, Any]:
    """The WorkflowRun object a `StartRunRequest` asks for; InvalidCommand naming the
    field if it cannot be one."""
    namespace, name = _placement(req, default_namespace)
    if name is not None and (len(name) > 253 or not _NAME.match(name)):
        raise InvalidCommand(
            f"run_id {req.run_id!r}: {name!r} is not a WorkflowRun name (lowercase letters, "
            "digits, '-' and '.'; write the run id as <namespace>.<name>)",
            field="run_id",
        )
    spec: dict[str, Any] = {"workflowRef": {"name": req.workflow}}
    if req.input is not None:
        spec["input"] = req.input
    if req.sticky is not None:
        spec["sticky"] = req.sticky
    if "schedule_timeout" in req.model_fields_set:
        spec["scheduleTimeout"] = format_duration(req.schedule_timeout)
    if req.worker_pool is not None:
        try:
            pool_namespace, pool = pool_object(req.worker_pool)
        except ValueError:
            pool_namespace, pool = namespace, req.worker_pool
        if pool_namespace != namespace:
            raise InvalidCommand(
                f"worker_pool {req.worker_pool!r} is in namespace {pool_namespace}, the run in "
                f"{namespace}: a WorkflowRun uses a WorkerPool of its own namespace",
                field="worker_pool",
            )
        spec["workerPool"] = pool
    metadata: dict[str, Any] = {"namespace": namespace}
    if name is None:
        slug = _SLUG.sub("-", req.workflow.lower()).strip("-")[:40].strip("-") or "run"
        metadata["generateName"] = f"{slug}-"
    else:
        metadata["name"] = name
    return {"apiVersion": API_VERSION, "kind": "WorkflowRun", "metadata": metadata, "spec": spec}


class ApiRunStarter:
    """Starts the runs clients ask for over HTTP as WorkflowRuns (see the module doc)."""

    def __init__(
        self,
        client: KubeClient,
        runs: RunController,
        default_namespace: str,
        watched: Sequence[str] = (),
        *,
        timeout: float = START_TIMEOUT,
    ) -> None:
        self.client = client
        self.runs = runs
        self.default_namespace = default_namespace
        self.watched = tuple(watched)
        self.timeout = timeout

    async def view(self, run_id: str) -> RunViewData | None:
        """The view of run `run_id` from its WorkflowRun object (`view_of_object`), with
        a result too large for the status read from the store; None if there is none,
        or the id names no WorkflowRun this operator serves."""
        try:
            namespace, name = run_object(run_id)
        except ValueError:
            return None
        if self.watched and namespace not in self.watched:
            return None
        try:
            body = await self.client.get(paths.workflow_runs(namespace, name))
        except ApiError as exc:
            if not exc.not_found:
                logger.warning("could not read WorkflowRun %s/%s: %s", namespace, name, exc)
            return None
        view = view_of_object(body)
        if (body.get("status") or {}).get("resultRef") and view["phase"] == "Succeeded":
            # Too large for the status: the result is read from the run's history.
            view["result"] = await self.runs.service.stored_result(run_id)
        return view

    async def views(self) -> list[RunViewData]:
        """Every WorkflowRun this operator serves, as views from their objects."""
        namespaces: Sequence[str | None] = self.watched or (None,)
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            try:
                items += await self.client.list(paths.workflow_runs(namespace))
            except ApiError as exc:  # the engine's runs are still listed
                logger.warning("could not list WorkflowRuns in %s: %s", namespace or "all", exc)
        return [view_of_object(body) for body in items]

    async def start(self, req: StartRunRequest) -> RunViewData:
        """Create the WorkflowRun for `req`; the run's view once it started and its first
        history is stored."""
        body = workflow_run_for(req, self.default_namespace)
        namespace = body["metadata"]["namespace"]
        if self.watched and namespace not in self.watched:
            raise InvalidCommand(
                f"namespace {namespace} is not watched by this operator (it serves "
                f"{', '.join(self.watched)}): start the run in one of those",
                field="run_id",
            )
        self.runs.service.require_registered(req.workflow, namespace)  # as dev mode
        try:
            created = await self.client.create(paths.workflow_runs(namespace), body)
        except ApiError as exc:
            if exc.conflict:
                raise RunAlreadyExists(
                    f"run {req.run_id} already exists (WorkflowRun {namespace}/"
                    f"{body['metadata'].get('name')}): pick another run id",
                    field="run_id",
                ) from exc
            if exc.status in (400, 422):
                raise InvalidCommand(
                    f"the API server refused WorkflowRun {namespace}/"
                    f"{body['metadata'].get('name') or body['metadata']['generateName']}: {exc}",
                ) from exc
            raise
        run_id = run_id_for(namespace, created["metadata"]["name"])
        return await self._started(run_id, created["metadata"]["uid"])

    async def _started(self, run_id: str, uid: str) -> RunViewData:
        """Wait until the controller started WorkflowRun `run_id` (or refused it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while (view := self._outcome(run_id, uid)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                namespace, name = run_object(run_id)
                raise RunNotStarted(
                    f"WorkflowRun {namespace}/{name} was created but has not started within "
                    f"{self.timeout:.0f}s (see `kubectl describe wfr -n {namespace} {name}`); "
                    f"its run id is {run_id}"
                )
            refusal = await self.runs.settled(run_id, remaining)
            if refusal is not None:
                raise InvalidCommand(f"WorkflowRun {run_id} was refused ({refusal})")
        if (written := self.runs.service.written([run_id])) is not None:
            await written
        return view

    def _outcome(self, run_id: str, uid: str) -> RunViewData | None:
        """The run's view once it started; InvalidCommand if it was refused; None before."""
        obj = self.runs.objects.get(run_id)
        if obj is None or obj.uid != uid:
            return None
        if obj.outside is not None and obj.outside.get("phase") == "Failed":
            error = obj.outside.get("error") or {}
            raise InvalidCommand(
                f"WorkflowRun {run_id} was refused ({error.get('reason')}): {error.get('message')}"
            )
        try:
            return self.runs.service.get_run(run_id)
        except RunNotFound:
            return None
