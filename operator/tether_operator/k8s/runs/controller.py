"""The WorkflowRun lifecycle: raw watch events in, engine calls and status writes out.

kopf delivers raw events (`@kopf.on.event`): no kopf status or progress storage, no
last-handled annotation, so a large `spec.input` never lands in an annotation.

- A new run is bound to its store (`bind(run_id, uid)`: every object the store
  creates is owned by the run) and started with its spec's input and overrides, else
  its Workflow's defaults. Its status is written once its first history is durable.
- A run whose workflow no worker has registered is `Pending` with `Accepted=False,
  reason=WorkflowNotRegistered` and starts when a worker registers it.
- Input the engine cannot take (schema error, over 2 MiB, a spec the models refuse)
  fails the run: `Failed` with the reason and the field; nothing is raised.
- A deleted run is cancelled (its tasks stopped) and forgotten; its owned objects are
  garbage-collected by Kubernetes (no finalizer: deleting never waits for us).
- A run the engine holds already (restored after a restart) is not started again; a
  finished one is left alone. `spec.ttlSecondsAfterFinished` deletes the object that
  long after `status.completionTime` (computed from status, so it survives restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from tether_operator.engine import EngineError, RunNotFound, WorkflowNotFound
from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.api.events import EventRecorder, ObjectRef
from tether_operator.k8s.pool_health import PoolHealth
from tether_operator.k8s.resources.conditions import Condition, condition
from tether_operator.k8s.resources.naming import pool_id_for, run_id_for, run_object
from tether_operator.k8s.resources.specs import (
    WorkflowRunSpec,
    WorkflowSpec,
    parse_duration,
)
from tether_operator.k8s.runs.mirror import MarkingStore, StatusPatch, StatusWriter
from tether_operator.k8s.runs.status import (
    TERMINAL_PHASES,
    pending_status,
    rejected_status,
    result_too_large,
    run_status,
)
from tether_operator.k8s.runs.workflows import WorkflowDirectory
from tether_operator.scheduler.service import SchedulerService
from tether_operator.store import StoreError
from tether_types.notices import Notice, WorkerLost
from tether_types.wire import DEFAULT_SCHEDULE_TIMEOUT
from worker_runtime.protocol import StartRunRequest

__all__ = ["MAX_INPUT_BYTES", "RunController"]

logger = logging.getLogger("tether.operator")

STATUS_INTERVAL = 0.25
"""Seconds between two status writes of one WorkflowRun, at least: a run stepping every
few tens of ms costs the API server four writes a second, not one per step."""
MAX_INPUT_BYTES = 2 * 1024 * 1024
"""Largest `spec.input` (as JSON) a run may have, like any activity payload."""


class InputRefused(Exception):
    """The run cannot start with this spec: `reason` and a message naming the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class RunObject:
    """What the operator knows of one WorkflowRun object."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: dict[str, Any]
    conditions: list[dict[str, Any]] = field(default_factory=list)
    written: dict[str, Any] | None = None
    """The last status written (or seen), to skip writes that change nothing."""
    outside: dict[str, Any] | None = None
    """The status of a run the engine does not hold (pending or refused)."""
    result_ref: dict[str, Any] | None = None
    """Where a result too large for the status is stored (once written)."""
    storing_result: bool = False
    history_error: str | None = None
    """Why the run's last history append failed, until one succeeds."""
    history_failed: bool = False
    """An append of its history failed once: its status says whether history is stored."""

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.namespace, self.name, self.uid)

    @property
    def ttl(self) -> int | None:
        value = self.spec.get("ttlSecondsAfterFinished")
        return value if isinstance(value, int) else None


def _history_condition(obj: RunObject) -> Condition | None:
    """`HistoryStored`, once an append of the run's history failed (absent before)."""
    if not obj.history_failed:
        return None
    if obj.history_error is not None:
        return condition(
            "HistoryStored",
            "False",
            "HistoryStoreUnavailable",
            f"retrying (nothing is lost): {obj.history_error}",
            obj.generation,
        )
    return condition(
        "HistoryStored", "True", "HistoryStored", "its history is written", obj.generation
    )


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class RunController:
    """Starts, mirrors, cancels and expires WorkflowRuns for one `SchedulerService`."""

    def __init__(
        self,
        service: SchedulerService,
        store: MarkingStore,
        client: KubeClient,
        events: EventRecorder,
        workflows: WorkflowDirectory,
        *,
        clock: Callable[[], float] = time.time,
        pools: PoolHealth | None = None,
    ) -> None:
        self.service = service
        self.pools = pools or PoolHealth()
        """Which WorkerPools exist and why one cannot start, for runs that wait."""
        self.pools.subscribe(self._pools_changed)
        self.store = store
        store.on_durable(self.mark)
        store.on_failure(self._history_failed)
        self.client = client
        self.events = events
        self.workflows = workflows
        self.clock = clock
        self.objects: dict[str, RunObject] = {}
        self.pending: set[str] = set()
        self._starting: set[str] = set()
        self._expiring: dict[str, asyncio.TimerHandle] = {}
        self._settling: dict[str, list[asyncio.Future[str | None]]] = {}
        """Who waits for a run to start or be refused (`settled`)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self.status = StatusWriter(
            client, self._compute, self._written, self._gone, min_interval=STATUS_INTERVAL
        )

    # ------------------------------------------------------------------ watch events

    async def on_event(self, event: Mapping[str, Any]) -> None:
        """Take in one raw watch event of a WorkflowRun. Never raises."""
        try:
            await self._on_event(event)
        except Exception:
            body = event.get("object") or {}
            meta = body.get("metadata") or {}
            logger.exception(
                "WorkflowRun %s/%s: handling a %s event failed",
                meta.get("namespace"),
                meta.get("name"),
                event.get("type"),
            )

    async def _on_event(self, event: Mapping[str, Any]) -> None:
        body = event.get("object") or {}
        meta = body.get("metadata") or {}
        namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
        if not (namespace and name and uid):
            return
        run_id = run_id_for(namespace, name)
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            await self._deleted(run_id, uid)
            return
        obj = self.objects.get(run_id)
        if obj is not None and obj.uid != uid:
            await self._deleted(run_id, obj.uid)  # replaced by a new object of the same name
            obj = None
        status = body.get("status") or {}
        if obj is None and status.get("phase") in TERMINAL_PHASES and run_id not in self._starting:
            # Finished, its final status written: nothing of it is kept (after a restart,
            # the engine drops what it recovered of it).
            self._retire(run_id)
            gone = RunObject(namespace, name, uid, meta.get("generation"), body.get("spec") or {})
            self._schedule_expiry(gone, status)
            return
        if obj is None:
            obj = self.objects[run_id] = RunObject(
                namespace=namespace,
                name=name,
                uid=uid,
                generation=meta.get("generation"),
                spec=dict(body.get("spec") or {}),
                conditions=list(status.get("conditions") or []),
            )
            self.status.mark(run_id)  # first sight (also after a restart): refresh it
        elif obj.generation != meta.get("generation"):
            obj.generation = meta.get("generation")
            obj.spec = dict(body.get("spec") or {})
            self.status.mark(run_id)
        self._schedule_expiry(obj, status)
        if self._in_engine(run_id) or run_id in self.pending or run_id in self._starting:
            return
        if status.get("phase") in TERMINAL_PHASES:
            return  # finished (or refused) before: left alone
        await self._start(obj)

    def _in_engine(self, run_id: str) -> bool:
        # is_terminal looks the run up without building its view (O(history)).
        try:
            self.service.is_terminal(run_id)
        except RunNotFound:
            return False
        return True

    # ------------------------------------------------------------------ starting

    def _request(self, obj: RunObject) -> StartRunRequest:
        """The engine's StartRunRequest for the run; InputRefused if it cannot start."""
        try:
            spec = WorkflowRunSpec.model_validate(obj.spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputRefused(
                "InvalidSpec", f"spec.{where}: {first['msg']}" if where else str(first["msg"])
            ) from None
        size = _json_size(spec.input)
        if size > MAX_INPUT_BYTES:
            raise InputRefused(
                "InvalidInput",
                f"spec.input is {size} bytes of JSON; a run's input may be at most "
                f"{MAX_INPUT_BYTES} bytes (2 MiB): pass a reference (a URL, a ConfigMap name) "
                "instead",
            )
        defaults = self.workflows.spec(obj.namespace, spec.workflow_ref.name)
        timeout = spec.schedule_timeout or (defaults.schedule_timeout if defaults else None)
        fields: dict[str, Any] = {
            "workflow": spec.workflow_ref.name,
            "input": spec.input,
            "sticky": spec.sticky or (defaults.sticky if defaults else None),
            "schedule_timeout": parse_duration(timeout) if timeout else DEFAULT_SCHEDULE_TIMEOUT,
        }
        pool = spec.worker_pool or (defaults.worker_pool if defaults else None)
        if pool:  # the WorkerPool of the run's own namespace
            fields["worker_pool"] = pool_id_for(obj.namespace, pool)
        request = StartRunRequest.model_validate(fields)
        # The run id is `<namespace>.<name>` (naming.py); it may be longer than the ids
        # a client may choose over HTTP, so it is set without that pattern check.
        return request.model_copy(update={"run_id": run_id_for(obj.namespace, obj.name)})

    async def _start(self, obj: RunObject) -> None:
        run_id = run_id_for(obj.namespace, obj.name)
        self._starting.add(run_id)
        try:
            try:
                request = self._request(obj)
            except InputRefused as exc:
                self._refuse(obj, exc.reason, exc.message)
                return
            self.store.bind(run_id, obj.uid)
            if self._in_engine(run_id):
                return  # started while its input was read
            try:
                self.service.start_run(request, namespace=obj.namespace)
            except WorkflowNotFound:
                await self._wait_for_worker(obj, request.workflow)
                return
            except EngineError as exc:
                message = f"spec.{exc.field}: {exc.message}" if exc.field else exc.message
                if exc.reason == "InvalidInput" and exc.field:
                    message = f"spec.input: {exc.message}"
                self._refuse(obj, exc.reason, message)
                return
            was_pending = run_id in self.pending or obj.outside is not None
            self.pending.discard(run_id)
            obj.outside = None
            self._settle(run_id, None)
            # The engine holds the input now; up to 2 MiB need not be kept twice.
            obj.spec = {key: value for key, value in obj.spec.items() if key != "input"}
            if was_pending:
                self.status.mark(run_id)
        finally:
            self._starting.discard(run_id)

    def _refuse(self, obj: RunObject, reason: str, message: str) -> None:
        run_id = run_id_for(obj.namespace, obj.name)
        self.pending.discard(run_id)
        logger.info("WorkflowRun %s/%s refused: %s: %s", obj.namespace, obj.name, reason, message)
        obj.outside = rejected_status(
            reason,
            message,
            generation=obj.generation,
            previous_conditions=obj.conditions,
            now=self.clock(),
        )
        self.events.record(obj.ref, "Warning", reason, message)
        self.status.mark(run_id)
        self._settle(run_id, f"{reason}: {message}")

    async def settled(self, run_id: str, timeout: float) -> str | None:  # noqa: ASYNC109
        """Wait until run `run_id` next starts in the engine (None) or is refused (the
        reason and message), at most `timeout` seconds (None too)."""
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        waiting = self._settling.setdefault(run_id, [])
        waiting.append(fut)
        try:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(fut, timeout)
            return None
        finally:
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self._settling.pop(run_id, None)

    def _settle(self, run_id: str, refusal: str | None) -> None:
        for fut in self._settling.pop(run_id, ()):
            if not fut.done():
                fut.set_result(refusal)

    async def _wait_for_worker(self, obj: RunObject, workflow: str) -> None:
        run_id = run_id_for(obj.namespace, obj.name)
        if run_id in self.pending:
            return
        self.pending.add(run_id)
        why = await self._why(obj)
        obj.outside = self._pending_status(obj, workflow, why)
        kind: Literal["Normal", "Warning"] = (
            "Normal" if why[0] == "WorkflowNotRegistered" else "Warning"
        )
        self.events.record(obj.ref, kind, why[0], why[1])
        self.status.mark(run_id)

    async def _why(self, obj: RunObject) -> tuple[str, str]:
        """`_why_pending`, with the Workflow read from the API server when the watch has
        not delivered it (yet: an operator that just started sees runs before them)."""
        workflow = str((obj.spec.get("workflowRef") or {}).get("name", ""))
        spec = self.workflows.spec(obj.namespace, workflow)
        if spec is None:
            path = paths.workflows(obj.namespace, workflow)
            try:
                body = await self.client.get(path)
                spec = WorkflowSpec.model_validate(body.get("spec") or {})
            except ApiError as exc:
                if not exc.not_found:
                    logger.warning(
                        "could not read Workflow %s/%s: %s", obj.namespace, workflow, exc
                    )
            except ValidationError:
                pass  # an invalid spec: as good as none
        return self._why_pending(obj, spec)

    def _pending_status(
        self, obj: RunObject, workflow: str, why: tuple[str, str]
    ) -> dict[str, Any]:
        return pending_status(
            workflow,
            generation=obj.generation,
            previous_conditions=obj.conditions,
            now=self.clock(),
            why=why,
        )

    def _why_pending(self, obj: RunObject, defaults: WorkflowSpec | None) -> tuple[str, str]:
        """(reason, message): what keeps a run that waits for its workflow from starting,
        as far as the operator can see it (`defaults`: its Workflow's spec, if any)."""
        spec = obj.spec
        workflow = str((spec.get("workflowRef") or {}).get("name", ""))
        where = f"namespace {obj.namespace!r}"
        if defaults is None:
            return (
                "WorkflowNotFound",
                f"spec.workflowRef.name: there is no Workflow {workflow!r} in {where}, and no "
                "worker there has registered it: create the Workflow, or start a WorkerPool "
                "whose workers define it",
            )
        pool, field_ = spec.get("workerPool"), "spec.workerPool"
        if not pool:
            pool, field_ = defaults.worker_pool, f"Workflow {workflow}'s spec.workerPool"
        if pool:
            key = (obj.namespace, str(pool))
            if not self.pools.exists(key):
                return (
                    "WorkerPoolNotFound",
                    f"{field_}: there is no WorkerPool {pool!r} in {where}: create it, or "
                    "name one that exists",
                )
            if trouble := self.pools.trouble(key):
                return (
                    "WorkerPoolNotReady",
                    f"WorkerPool {pool!r} ({field_}) cannot start a worker: {trouble}",
                )
            return (
                "WorkflowNotRegistered",
                f"no worker of WorkerPool {pool!r} has registered workflow {workflow!r} yet: "
                "the run starts as soon as one does",
            )
        return (
            "WorkflowNotRegistered",
            f"no worker in {where} has registered workflow {workflow!r} yet: the run starts "
            "as soon as one does",
        )

    @staticmethod
    def _said(obj: RunObject) -> tuple[str, str]:
        """(reason, message) of the Accepted condition of a run kept outside the engine."""
        conditions = (obj.outside or {}).get("conditions", [])
        accepted = {c["type"]: c for c in conditions}.get("Accepted") or {}
        return str(accepted.get("reason", "")), str(accepted.get("message", ""))

    def _pools_changed(self) -> None:
        """A pool appeared, went, or its trouble changed: tell waiting runs again."""
        for run_id in self.pending:
            obj = self.objects.get(run_id)
            if obj is None or obj.outside is None:
                continue
            workflow = str((obj.spec.get("workflowRef") or {}).get("name", ""))
            spec = self.workflows.spec(obj.namespace, workflow)
            if spec is None and self._said(obj)[0] != "WorkflowNotFound":
                continue  # the Workflow was read from the API server: no news about it
            why = self._why_pending(obj, spec)
            if self._said(obj) == why:
                continue
            workflow = str((obj.spec.get("workflowRef") or {}).get("name", ""))
            obj.outside = self._pending_status(obj, workflow, why)
            if why[0] != "WorkflowNotRegistered":
                self.events.record(obj.ref, "Warning", why[0], why[1])
            self.status.mark(run_id)

    def waiting_by_pool(self) -> dict[str, int]:
        """Runs waiting for a worker to register their workflow, per pool id ("" for
        none): demand the WorkerPool controller scales on before the engine holds them."""
        counts: dict[str, int] = {}
        for run_id in self.pending:
            obj = self.objects.get(run_id)
            if obj is None:
                continue
            try:
                pool = self._request(obj).worker_pool or ""
            except InputRefused:
                continue
            counts[pool] = counts.get(pool, 0) + 1
        return counts

    def retry_pending(self) -> None:
        """A worker registered: start the runs that waited for one."""
        for run_id in sorted(self.pending):
            obj = self.objects.get(run_id)
            if obj is None:
                self.pending.discard(run_id)
                continue
            self.pending.discard(run_id)
            self._spawn(self._start(obj))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ notices

    def on_notice(self, notice: Notice) -> None:
        """Engine notices about a run become Events on its WorkflowRun; a lost worker
        becomes a `WorkerLost` Event on each run whose work it held."""
        if isinstance(notice, WorkerLost):
            self._worker_lost(notice)
        if notice.run_id is None:
            return
        obj = self.objects.get(notice.run_id)
        if obj is not None:
            self.events.record(obj.ref, notice.level, notice.reason, notice.message)

    def _worker_lost(self, notice: WorkerLost) -> None:
        """Tell each run whose attempts or workflow task the worker held what happens to
        them (its broken sessions have their own Events)."""
        for loss in notice.runs:
            obj = self.objects.get(loss.run_id)
            if (
                obj is None
                or not self._in_engine(loss.run_id)
                or self.service.is_terminal(loss.run_id)
            ):
                continue
            lost = [f"attempt {attempt} of step {seq} is retried" for seq, attempt in loss.attempts]
            if loss.workflow_replayed:
                lost.insert(0, "its workflow code is replayed on another worker")
            if lost:
                self.events.record(
                    obj.ref,
                    "Warning",
                    "WorkerLost",
                    f"worker {notice.worker_id} lost ({notice.loss}): {'; '.join(lost)}",
                )

    # ------------------------------------------------------------------ deletion, expiry

    async def _deleted(self, run_id: str, uid: str) -> None:
        obj = self.objects.get(run_id)
        if obj is not None and obj.uid != uid:
            return  # an event of an older object of the same name
        self.objects.pop(run_id, None)
        self.pending.discard(run_id)
        handle = self._expiring.pop(uid, None)
        if handle is not None:
            handle.cancel()
        self.service.discard_finished(run_id)
        if not self._in_engine(run_id):
            return
        family = self._descendants(run_id)
        if not self.service.is_terminal(run_id):
            logger.info("WorkflowRun %s deleted: cancelling the run", run_id)
            self.service.cancel_run(run_id)  # and its children with it
        for child in family:
            if not self.service.is_terminal(child):
                self.service.cancel_run(child)
        # The cancellations are history too: delete only after they are written, or a
        # tier without owner objects (SQL) would keep what they wrote after the delete.
        written = self.service.written([run_id, *family])
        for child in family:
            self.forget(child)
            self.service.discard_finished(child)
        self.forget(run_id)
        self.service.discard_finished(run_id)  # its object is gone: so is its final view
        with contextlib.suppress(Exception):
            if written is not None:
                await asyncio.wait_for(written, 30)
            await self.store.delete(run_id)

    def _descendants(self, run_id: str) -> list[str]:
        """The child runs the engine holds for `run_id`, theirs, and so on."""
        found: list[str] = []
        todo = [run_id]
        while todo:
            for child in self.service.get_run(todo.pop())["children"]:
                if self._in_engine(child["run_id"]) and child["run_id"] not in found:
                    found.append(child["run_id"])
                    todo.append(child["run_id"])
        return found

    def forget(self, run_id: str) -> None:
        """Drop a finished run from the engine (its object is gone; its name may be reused)."""
        if self.service.is_terminal(run_id):
            self.service.forget_run(run_id)

    def _schedule_expiry(self, obj: RunObject, status: Mapping[str, Any]) -> None:
        ttl, done = obj.ttl, status.get("completionTime")
        if ttl is None or not done or obj.uid in self._expiring:
            return
        try:
            due = _timestamp(str(done)) + ttl
        except ValueError:
            return
        delay = max(0.0, due - self.clock())
        loop = asyncio.get_running_loop()
        namespace, name, uid = obj.namespace, obj.name, obj.uid  # not the whole object
        self._expiring[uid] = loop.call_later(
            delay, lambda: self._spawn(self._expire(namespace, name, uid))
        )

    async def _expire(self, namespace: str, name: str, uid: str) -> None:
        path = paths.workflow_runs(namespace, name)
        try:
            await self.client.delete(path, propagation="Background", preconditions={"uid": uid})
            logger.info(
                "WorkflowRun %s/%s deleted: ttlSecondsAfterFinished passed", namespace, name
            )
        except ApiError as exc:
            if not exc.conflict:  # 409: another object of that name by now
                logger.warning(
                    "could not delete expired WorkflowRun %s/%s: %s", namespace, name, exc
                )
        except Exception as exc:
            logger.warning("could not delete expired WorkflowRun %s/%s: %s", namespace, name, exc)

    # ------------------------------------------------------------------ status

    def mark(self, run_id: str) -> None:
        """The run's durable history grew: write its status soon."""
        obj = self.objects.get(run_id)
        if obj is not None:
            if obj.history_error is not None:
                obj.history_error = None
                self.events.record(
                    obj.ref, "Normal", "HistoryStored", "its history is written again"
                )
            self.status.mark(run_id)

    def _history_failed(self, run_id: str, error: StoreError) -> None:
        """An append of the run's history failed and is retried: say why, once per
        outage, in an Event and the `HistoryStored` condition."""
        root = self.store.root(run_id)
        obj = self.objects.get(root)
        if obj is None or obj.history_error is not None:
            return
        obj.history_error = str(error)
        obj.history_failed = True
        message = f"its history cannot be written, retrying (nothing is lost): {error}"
        self.events.record(obj.ref, "Warning", "HistoryNotStored", message)
        self.status.mark(root)

    def _compute(self, run_id: str) -> StatusPatch | None:
        obj = self.objects.get(run_id)
        if obj is None:
            return None
        if obj.outside is not None:
            status = obj.outside
        else:
            try:
                view = self.service.get_run(run_id)
            except RunNotFound:
                return None
            stored = self.store.durable_length(run_id)
            if not stored or (
                view["phase"] in TERMINAL_PHASES and view.get("history_length", 0) > stored
            ):
                # Not accepted yet, or its end not stored yet: the append that stores it
                # marks the run again. Progress may run one in-flight write ahead.
                return None
            if result_too_large(view) and obj.result_ref is None and not obj.storing_result:
                obj.storing_result = True
                self._spawn(self._store_result(obj, view.get("result")))
            status = run_status(
                view,
                generation=obj.generation,
                previous_conditions=obj.conditions,
                now=self.clock(),
                result_ref=obj.result_ref,
                history=_history_condition(obj),
            )
        if status == obj.written:
            return None
        namespace, name = run_object(run_id)
        path = paths.workflow_runs(namespace, name, "status")
        return StatusPatch(path, status)

    async def _store_result(self, obj: RunObject, result: Any) -> None:
        """Publish a large result where the store's tier keeps it for readers (payload
        ConfigMaps owned by the run on the API-server tier), for its status to point at."""
        run_id = run_id_for(obj.namespace, obj.name)
        try:
            ref = await self.store.publish_result(run_id, result)
        except Exception as exc:
            logger.warning("could not store the result of %s for its status: %s", run_id, exc)
            self._result_not_stored(obj)
            return
        if ref is None:
            self._result_not_stored(obj)  # a tier that keeps none: the size only
            return
        obj.result_ref = ref
        self.status.mark(run_id)

    def _result_not_stored(self, obj: RunObject) -> None:
        obj.storing_result = False
        if (obj.written or {}).get("phase") in TERMINAL_PHASES:
            self._retire(run_id_for(obj.namespace, obj.name))  # its final status is written

    def _written(self, run_id: str, status: dict[str, Any]) -> None:
        obj = self.objects.get(run_id)
        if obj is None:
            return
        obj.written = status
        obj.conditions = list(status.get("conditions") or [])
        self._schedule_expiry(obj, status)
        # A large result on its way to its ConfigMap has one more write to come: the
        # run leaves memory once a written status points at it (not when the reference
        # is known: it may have come while a status without it was being written).
        if status.get("phase") in TERMINAL_PHASES and (
            not obj.storing_result or (status.get("resultRef") or {}).get("configMap")
        ):
            self._retire(run_id)

    def _retire(self, run_id: str) -> None:
        """A finished run whose final status is written leaves the operator's memory: the
        engine (with its child runs; `SchedulerService.forget_run` keeps its final view
        answerable a while), the store's bookkeeping and this controller's object. Its
        WorkflowRun and its stored history stay in the cluster."""
        self.objects.pop(run_id, None)
        self.pending.discard(run_id)
        if self._in_engine(run_id) and self.service.is_terminal(run_id):
            for finished in (*self._descendants(run_id), run_id):
                self.forget(finished)
                self.store.forget(finished)

    def _gone(self, run_id: str) -> None:
        obj = self.objects.get(run_id)
        if obj is not None:
            self._spawn(self._deleted(run_id, obj.uid))
