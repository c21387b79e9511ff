"""The WorkerPool controller: a pool's pods, their count, scale-down order and status.

Level-based and idempotent: `reconcile` reads the pool (as last seen by the watch),
its pods (likewise, plus what this controller just created or deleted) and the
engine's demand (plus the runs the operator holds back until their workflow is
registered), then creates or deletes pods, updates deletion costs and writes the
status. Reconciles of one pool never overlap; a request while one runs makes it run
once more. They are triggered by pool and pod events, by a tick (every pool each
second) and, for autoscaled pools, by engine notices that change demand (a run
started, a worker registered or was lost).

- Pods come from `spec.template` (`pods.build_pod`), named `<pool>-<random5>`,
  labelled `tether.dev/pool=<pool>`, owned by the pool; only pods it controls count.
- Without `autoscale` the pool keeps `spec.replicas` pods (`kubectl scale` writes it),
  within [minReplicas, maxReplicas]. With `autoscale: true` the controller sets
  `spec.replicas` itself from the demand (`scaling.autoscale_target`), so
  `kubectl get wp` shows the count it chose; a `kubectl scale` is then overridden at
  the next tick, as an HPA would.
- Scale-down removes idle pods first (`scaling.scale_down_order`) and tells the
  scheduler the worker is draining (`ScaledDown`) before deleting. A pod deleted by
  anyone else is reported draining (`PodDeleted`, `Evicted` for an eviction) as soon
  as the watch shows its deletionTimestamp, and lost when it is gone (DELETED); a pod
  that ended (phase Failed or Succeeded) is reported lost, deleted and replaced, with
  a backoff while new pods keep ending before their worker registers. A pod the API
  server refuses is tried again after 1, 2, 4 ... 60 s (one Event per distinct
  refusal; never in a namespace being deleted); editing the pool ends either backoff.
  Reports are
  made in the watch handler itself, never deferred to a reconcile, and name the pod
  and its node.
- `controller.kubernetes.io/pod-deletion-cost` on every pod follows its load; a pod
  whose worker holds sessions carries `tether.dev/sticky=true` and
  `tether.dev/sessions=<ids>` (one PATCH per pod per change, within 1 to 2 s of it).
- New pods get a termination grace that fits the longest `start_to_close_timeout`
  the pool's workers registered (`pods.default_grace`) and, while SOFT sessions of
  the pool wait to rebind, a preferred node affinity to their old nodes.

All writes go through `KubeClient`; kopf only delivers the watch events
(`register_handlers`). `setup(registry, context)` plugs the controller into the
operator (`k8s/operator.py`, its controller seam).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import kopf
from pydantic import ValidationError

from tether_operator.engine import Demand, EngineError
from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.api.events import EventRecorder, ObjectRef
from tether_operator.k8s.context import OperatorContext
from tether_operator.k8s.pool_health import PoolHealth, PoolKey
from tether_operator.k8s.pools.pods import (
    DELETION_COST,
    SESSIONS_ANNOTATION,
    build_pod,
    created_at,
    deletion_cost,
    evicted,
    failed,
    metadata_patch,
    new_pod_name,
    node_of,
    pod_template_hash,
    session_metadata,
    template_hash,
    terminating,
    trouble,
)
from tether_operator.k8s.pools.scaling import (
    PodState,
    Target,
    autoscale_target,
    clamp,
    scale_down_order,
)
from tether_operator.k8s.resources.conditions import condition, merge_conditions, rfc3339
from tether_operator.k8s.resources.naming import POOL_LABEL, pool_id_for
from tether_operator.k8s.resources.specs import (
    GROUP,
    VERSION,
    WorkerPool,
    WorkerPoolSpec,
    parse_duration,
)
from tether_operator.scheduler import SchedulerService
from tether_types.notices import Notice
from tether_types.wire import is_permanent_loss
from worker_runtime.protocol import RegisterWorkerRequest

__all__ = ["PoolController", "register_handlers", "setup"]

logger = logging.getLogger("tether.pools")

"""(namespace, name) of a WorkerPool."""

_DEMAND_NOTICES = frozenset({"RunStarted", "WorkerRegistered", "WorkerLost", "SessionBroken"})
"""Engine notices after which some pool's demand may have changed."""
_SESSION_NOTICES = frozenset(
    {"SessionBound", "SessionRebound", "SessionBroken", "RunSucceeded", "RunFailed", "RunCancelled"}
)
"""Engine notices after which the sessions pinned to some pod may have changed (a
session closed by its `with` block has no notice: the next pass of the tick sees it)."""

Report = Literal["draining", "lost"]
"""What the controller told the scheduler about a pod's worker."""

MAX_CREATE_BACKOFF = 60.0
"""Longest wait before creating pods again after pods of the pool kept ending, or the
API server kept refusing them."""
_NAMESPACE_ENDING = "because it is being terminated"
"""In the API server's refusal of an object created in a namespace being deleted."""
_POD_NAME = re.compile(r'\bPod "[^"]*"')


@dataclass
class _Pool:
    body: dict[str, Any] | None = None
    """The WorkerPool as the watch last delivered it."""
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Its pods by name: what the watch delivered, updated by this controller's writes."""
    idle_since: dict[str, float] = field(default_factory=dict)
    scaled_down: set[str] = field(default_factory=set)
    """Pods this controller deleted to scale down (reported `ScaledDown`, not `PodDeleted`)."""
    replaced: set[str] = field(default_factory=set)
    """Pods this controller deleted in a rollout (reported `ScaledDown`, saying why)."""
    rolling_since: float | None = None
    """When the current rollout began (None: every pod is from the current template)."""
    rollout_waits: str = ""
    """What the current rollout waits for, for the status."""
    reported: dict[str, Report] = field(default_factory=dict)
    """Pods whose worker the scheduler was told about: draining, then lost."""
    create_error: str = ""
    refusals: int = 0
    """Pod creations the API server refused in a row (backoff between tries)."""
    generation: int | None = None
    """The pool's `metadata.generation` last seen: an edit ends any backoff."""
    failures: int = 0
    """Pods of the pool that ended (phase Failed) since a worker of it last registered."""
    create_after: float = 0.0
    """No new pods before this time (backoff after pods kept ending)."""
    troubles_said: set[tuple[str, str]] = field(default_factory=set)
    """(reason, message) of pod troubles already told in an Event."""
    written_status: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None
    again: bool = False


class PoolController:
    """Reconciles WorkerPools in the namespaces its watch delivers."""

    def __init__(
        self,
        service: SchedulerService,
        client: KubeClient,
        *,
        scheduler_url: str,
        clock: Callable[[], float] = time.time,
        tick: float = 1.0,
        startup_grace: float = 10.0,
        rng: random.Random | None = None,
        events: EventRecorder | None = None,
        waiting: Callable[[], Mapping[str, int]] = dict,
        health: PoolHealth | None = None,
    ) -> None:
        self.service = service
        self.health = health or PoolHealth()
        """Which pools exist and why one cannot start a worker, for waiting runs."""
        self.client = client
        self.scheduler_url = scheduler_url
        """What worker pods are told to reach the scheduler at (TETHER_SCHEDULER_URL)."""
        self.events = events
        self.waiting = waiting
        """Runs the engine does not hold yet that wait for a worker, per pool id: a pool
        scaled to zero has no worker to register their workflow."""
        self.clock = clock
        self.tick = tick
        self.startup_grace = startup_grace
        """No scale-down this soon after start: workers are still re-registering, so
        every pod looks idle."""
        self._rng = rng
        self._pools: dict[PoolKey, _Pool] = {}
        self._longest_activity: dict[str, float] = {}
        """Per pool id: the longest `start_to_close_timeout` its workers registered."""
        self._started_at = clock()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the periodic tick and follow engine notices (idempotent)."""
        if self._loop_task is not None:
            return
        self._started_at = self.clock()
        self._unsubscribe = self.service.subscribe(self._on_notice)
        self._loop_task = asyncio.create_task(self._ticking(), name="tether-pools-tick")

    async def stop(self) -> None:
        """Stop ticking and wait for running reconciles."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [p.task for p in self._pools.values() if p.task is not None]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
            self._loop_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """`start`, then run until cancelled, then `stop` (for the operator's companions)."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def _on_notice(self, notice: Notice) -> None:
        if notice.reason in _DEMAND_NOTICES or notice.reason in _SESSION_NOTICES:
            self._wake.set()

    def worker_registered(self, req: RegisterWorkerRequest) -> None:
        """Remember the longest `start_to_close_timeout` of the pool's activities: new
        pods get a termination grace that fits it."""
        if not req.pool:
            return
        timeouts = [
            a.options.start_to_close_timeout
            for a in req.activities
            if a.options.start_to_close_timeout is not None
        ]
        if timeouts:
            longest = max(timeouts)
            if longest > self._longest_activity.get(req.pool, 0.0):
                self._longest_activity[req.pool] = longest

    async def _ticking(self) -> None:
        """Every pool each `tick`; autoscaled pools, and pools whose pods' sessions
        changed, also soon after a notice, at most every half tick (demand is a scan of
        the queues: a burst of notices, one scan)."""
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick)
            self._wake.clear()
            full = loop.time() - last_full >= self.tick
            if full:
                last_full = loop.time()
            moved = set() if full else self._sessions_moved()
            for key, pool in list(self._pools.items()):
                if (
                    full
                    or key in moved
                    or (pool.body is not None and pool.body["spec"].get("autoscale"))
                ):
                    self.kick(key)
            await asyncio.sleep(self.tick / 2)

    def _sessions_moved(self) -> set[PoolKey]:
        """Pools with a live pod whose `tether.dev/sessions` annotation is not what its
        worker holds now."""
        demand = self.service.demand()
        moved = set()
        for key, pool in self._pools.items():
            pinned = demand.get(pool_id_for(*key), Demand()).pinned
            for name, pod in pool.pods.items():
                if terminating(pod) or failed(pod):
                    continue
                _, wanted = session_metadata(pinned.get(name, frozenset()))
                shown = (pod["metadata"].get("annotations") or {}).get(SESSIONS_ANNOTATION)
                if shown != wanted[SESSIONS_ANNOTATION]:
                    moved.add(key)
                    break
        return moved

    # ------------------------------------------------------------------ events

    async def on_pool_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A WorkerPool watch event (`event_type` None for the initial listing)."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            pool = self._pools.pop(key, None)
            if pool is not None and pool.task is not None:
                pool.task.cancel()
            self.health.gone(key)
            self.service.metrics.pool_gone(*key)
            return  # its pods are garbage-collected; their pod events report the loss
        pool = self._pools.setdefault(key, _Pool())
        pool.body = body
        generation = body["metadata"].get("generation")
        if generation != pool.generation:
            # The user edited the pool (a fixed template, say): try at once.
            pool.generation = generation
            pool.refusals = pool.failures = 0
            pool.create_after = 0.0
        self.kick(key)

    async def on_pod_event(self, event_type: str | None, pod: dict[str, Any]) -> None:
        """A watch event of a pod labelled `tether.dev/pool`."""
        meta = pod["metadata"]
        key = (meta["namespace"], meta["labels"][POOL_LABEL])
        pool = self._pools.setdefault(key, _Pool())
        if event_type == "DELETED":
            pool.pods.pop(meta["name"], None)
            self._report(key, pool, pod, "lost")
            pool.scaled_down.discard(meta["name"])
            pool.replaced.discard(meta["name"])
            pool.reported.pop(meta["name"], None)
            if pool.body is None and not pool.pods:
                del self._pools[key]  # the pool is gone too
        else:
            pool.pods[meta["name"]] = pod
            # Now, not at the next reconcile: sessions break within a second.
            if failed(pod):
                self._report(key, pool, pod, "lost")
            elif terminating(pod):
                self._report(key, pool, pod, "draining")
        if pool.body is not None:
            self.kick(key)

    # ------------------------------------------------------------------ reconcile

    def kick(self, key: PoolKey) -> None:
        """Reconcile pool `key` soon; once more after the running reconcile if one runs."""
        pool = self._pools.get(key)
        if pool is None or pool.body is None:
            return
        if pool.task is not None and not pool.task.done():
            pool.again = True
            return
        pool.task = asyncio.create_task(self._reconcile_until_settled(key))

    async def _reconcile_until_settled(self, key: PoolKey) -> None:
        pool = self._pools.get(key)
        while pool is not None:
            pool.again = False
            try:
                await self.reconcile(key)
            except ApiError as exc:
                logger.warning("WorkerPool %s/%s: %s", *key, exc)
            except Exception:
                logger.exception("WorkerPool %s/%s: reconcile failed", *key)
            if not pool.again:
                return

    async def reconcile(self, key: PoolKey) -> None:
        """Bring pool `key`'s pods, their deletion costs and its status in line."""
        pool = self._pools.get(key)
        if pool is None or pool.body is None:
            return
        body = pool.body
        try:
            spec = WorkerPool.model_validate(body).spec
        except ValidationError as exc:
            logger.error("WorkerPool %s/%s is not valid, not reconciled: %s", *key, exc)
            return
        pool_id = pool_id_for(*key)
        now = self.clock()
        # Only pods this pool controls count: a stray pod with the label is not ours.
        owned = [p for p in pool.pods.values() if _controller_uid(p) == body["metadata"]["uid"]]
        for pod in owned:
            if failed(pod):
                self._report(key, pool, pod, "lost")  # a no-op unless it registered meanwhile
            if terminating(pod):
                self._report(key, pool, pod, "draining")
            elif failed(pod):
                if not evicted(pod):
                    pool.failures += 1
                    pool.create_after = now + min(MAX_CREATE_BACKOFF, 2.0 ** (pool.failures - 1))
                await self._delete(key, pool, pod)
                self._event(
                    key, body, "Normal", "SuccessfulDelete", f"deleted ended pod {_name(pod)}"
                )
        live = [p for p in owned if not terminating(p) and not failed(p)]
        demand = self.service.demand().get(pool_id)
        if not_started := self.waiting().get(pool_id, 0):
            demand = demand or Demand()
            demand = replace(demand, queued=demand.queued + not_started)
        states = self._pod_states(pool, live, demand, now)

        if any(s.load is not None for s in states):
            pool.failures = 0  # a worker came up: the template works

        if spec.autoscale:
            target = autoscale_target(spec, states, demand)
            if target.replicas != spec.replicas:
                await self._write_replicas(key, target.replicas)
                self._event(key, body, "Normal", "Autoscaled", _autoscale_message(target, demand))
        else:
            target = clamp(spec, spec.replicas)

        current = template_hash(body)
        outdated = {_name(p) for p in live if pod_template_hash(p) not in (None, current)}
        if outdated:
            states = await self._roll(key, pool, spec, live, states, outdated, target, demand, now)
        else:
            pool.rolling_since, pool.rollout_waits = None, ""
            live, states = await self._keep_count(key, pool, live, states, target, demand, now)
        await self._update_pods(pool, states)
        troubles = self._troubles(key, pool, live, states)
        outdated &= {s.name for s in states}
        await self._write_status(key, pool, body, target, states, troubles, outdated)
        self.health.seen(key, _trouble_text(pool, troubles))

    async def _listed_live(
        self, key: PoolKey, pool: _Pool, body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The pool's live pods as the API server lists them now (the cache is updated)."""
        listed = await self.client.list(paths.pods(key[0]), label_selector=f"{POOL_LABEL}={key[1]}")
        for pod in listed:
            pool.pods.setdefault(pod["metadata"]["name"], pod)
        uid = body["metadata"]["uid"]
        return [
            p
            for p in pool.pods.values()
            if _controller_uid(p) == uid and not terminating(p) and not failed(p)
        ]

    def _pod_states(
        self, pool: _Pool, live: list[dict[str, Any]], demand: Demand | None, now: float
    ) -> list[PodState]:
        loads = demand.workers if demand is not None else {}
        pinned = demand.pinned if demand is not None else {}
        states = []
        names = set()
        for pod in live:
            name = pod["metadata"]["name"]
            names.add(name)
            state = PodState(
                name, created_at(pod), loads.get(name), 0.0, pinned.get(name, frozenset())
            )
            if state.busy:
                pool.idle_since[name] = now
            since = pool.idle_since.setdefault(name, now)
            states.append(replace(state, idle_for=now - since))
        for gone in set(pool.idle_since) - names:
            del pool.idle_since[gone]
        return states

    # ------------------------------------------------------------------ writes

    async def _create(
        self, key: PoolKey, pool: _Pool, count: int, demand: Demand | None, now: float
    ) -> None:
        assert pool.body is not None
        path = paths.pods(key[0])
        for _ in range(count):
            manifest = build_pod(
                pool.body,
                name=new_pod_name(key[1], self._rng),
                scheduler_url=self.scheduler_url,
                longest_activity=self._longest_activity.get(pool_id_for(*key)),
                prefer_nodes=demand.rebind_nodes if demand is not None else (),
            )
            try:
                created = await self.client.create(path, manifest)
            except ApiError as exc:
                if exc.conflict:
                    continue  # a name clash: the next reconcile tries another name
                self._refused(key, pool, exc, now)
                return
            pool.create_error = ""
            pool.refusals = 0
            pool.pods[_name(created)] = created
            logger.info("WorkerPool %s/%s: created pod %s", *key, _name(created))
            self._event(
                key, pool.body, "Normal", "SuccessfulCreate", f"created pod {_name(created)}"
            )

    async def _keep_count(
        self,
        key: PoolKey,
        pool: _Pool,
        live: list[dict[str, Any]],
        states: list[PodState],
        target: Target,
        demand: Demand | None,
        now: float,
    ) -> tuple[list[dict[str, Any]], list[PodState]]:
        """Create or remove pods until `target.replicas` live; the pods and states left."""
        body = pool.body
        assert body is not None
        if len(live) < target.replicas:
            # The watch may not have delivered every pod yet (an operator that just
            # started sees the pool before its pods): count from the API server.
            live = await self._listed_live(key, pool, body)
        if len(live) < target.replicas:
            if not self.scheduler_url:
                pool.create_error = (
                    "the operator has no scheduler URL to give worker pods: set "
                    "TETHER_SCHEDULER_URL (or --scheduler-url) to the scheduler Service's URL"
                )
            elif now >= pool.create_after:
                await self._create(key, pool, target.replicas - len(live), demand, now)
            elif not pool.refusals:
                pool.create_error = (
                    f"{pool.failures} pod(s) in a row ended before their worker registered "
                    f"(see the pods' logs); the next pod is created in "
                    f"{pool.create_after - now:.0f}s"
                )
        elif len(live) > target.replicas and now - self._started_at >= self.startup_grace:
            excess = len(live) - target.replicas
            victims = scale_down_order(states)[:excess]
            states = [s for s in states if s not in victims]
            for victim in victims:
                pool.scaled_down.add(victim.name)
                self._report(key, pool, pool.pods[victim.name], "draining")
                await self._delete(key, pool, pool.pods[victim.name])
                self._event(
                    key,
                    body,
                    "Normal",
                    "SuccessfulDelete",
                    f"deleted pod {victim.name}: scaled down to {target.replicas}",
                )
        return live, states

    async def _roll(
        self,
        key: PoolKey,
        pool: _Pool,
        spec: WorkerPoolSpec,
        live: list[dict[str, Any]],
        states: list[PodState],
        outdated: set[str],
        target: Target,
        demand: Demand | None,
        now: float,
    ) -> list[PodState]:
        """One step of a rollout, as a Deployment's rolling update: new pods up to
        `maxSurge` above the wanted count; outdated pods go, idle ones first, while the
        ready pods stay at least `maxUnavailable` below it; a pod holding sessions only
        once they ended (or `sessionGrace` after the rollout began). Returns the states
        of the pods left."""
        assert pool.body is not None
        policy = spec.rollout
        if pool.rolling_since is None:
            pool.rolling_since = now
            self._event(
                key, pool.body, "Normal", "RollingOut",
                f"replacing {len(outdated)} pod(s) made from an older template",
            )  # fmt: skip
        fresh = len(live) - len(outdated)
        create = min(target.replicas - fresh, target.replicas + policy.max_surge - len(live))
        if create > 0 and self.scheduler_url and now >= pool.create_after:
            await self._create(key, pool, create, demand, now)
        grace = parse_duration(policy.session_grace) if policy.session_grace else None
        held = now - pool.rolling_since
        ready = sum(1 for s in states if s.load is not None)
        least = target.replicas - policy.max_unavailable
        gone, waits = set(), []
        for state in scale_down_order(s for s in states if s.name in outdated):
            if state.sessions and (grace is None or held < grace):
                waits.append(f"pod {state.name} keeps its {state.sessions} session(s)")
                continue
            if state.load is not None:
                if ready - 1 < least:
                    waits.append("new pods to be ready")
                    break
                ready -= 1
            gone.add(state.name)
            pod = pool.pods[state.name]
            pool.replaced.add(state.name)
            self._report(key, pool, pod, "draining")
            await self._delete(key, pool, pod)
            self._event(
                key, pool.body, "Normal", "SuccessfulDelete",
                f"deleted pod {state.name}: replaced by one from the current template",
            )  # fmt: skip
        pool.rollout_waits = ", ".join(dict.fromkeys(waits))
        return [s for s in states if s.name not in gone]

    def _refused(self, key: PoolKey, pool: _Pool, exc: ApiError, now: float) -> None:
        """The API server refused a pod: wait 1, 2, 4 ... 60 s before the next try (none
        in a namespace being deleted); one Event and log line per distinct refusal."""
        assert pool.body is not None
        pool.refusals += 1
        if _NAMESPACE_ENDING in exc.message:
            pool.create_after = math.inf
            error = f"namespace {key[0]} is being deleted: no pod is created in it"
        else:
            pool.create_after = now + min(MAX_CREATE_BACKOFF, 2.0 ** (pool.refusals - 1))
            # The refused pod's random name would make every refusal look new.
            reason = _POD_NAME.sub("the pod", exc.message)
            error = f"cannot create a pod from spec.template: {reason}"
        if error != pool.create_error:
            level = logging.INFO if pool.create_after == math.inf else logging.WARNING
            logger.log(level, "WorkerPool %s/%s: %s", *key, error)
            self._event(key, pool.body, "Warning", "FailedCreate", error)
        pool.create_error = error

    async def _delete(self, key: PoolKey, pool: _Pool, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        await self.client.delete(
            paths.pods(key[0], name),
            preconditions={"uid": pod["metadata"]["uid"]},
        )
        # Until the watch says so, count it as terminating, not as a live pod.
        gone = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": rfc3339(self.clock())}}
        pool.pods[name] = gone
        logger.info("WorkerPool %s/%s: deleted pod %s", *key, name)

    async def _write_replicas(self, key: PoolKey, replicas: int) -> None:
        path = paths.worker_pools(*key)
        updated = await self.client.patch(path, {"spec": {"replicas": replicas}})
        pool = self._pools.get(key)
        if pool is not None:
            pool.body = updated
        logger.info("WorkerPool %s/%s: autoscaled to %d", *key, replicas)

    async def _update_pods(self, pool: _Pool, states: list[PodState]) -> None:
        """Each live pod's deletion cost and session label and annotation: one PATCH
        per pod whose metadata changes, none for the others."""
        for state in states:
            pod = pool.pods.get(state.name)
            if pod is None or terminating(pod):
                continue
            labels, annotations = session_metadata(state.pinned)
            annotations[DELETION_COST] = str(deletion_cost(state.load, state.pinned))
            patch = metadata_patch(pod, labels, annotations)
            if patch is None:
                continue
            meta = pod["metadata"]
            try:
                pool.pods[state.name] = await self.client.patch(
                    paths.pods(meta["namespace"], state.name), patch
                )
            except ApiError as exc:
                if not exc.not_found:
                    raise

    async def _write_status(
        self,
        key: PoolKey,
        pool: _Pool,
        body: dict[str, Any],
        target: Target,
        states: list[PodState],
        troubles: Sequence[tuple[str, str, str]] = (),
        outdated: Collection[str] = (),
    ) -> None:
        generation = body["metadata"].get("generation")
        ready = sum(1 for s in states if s.load is not None)
        self.service.metrics.pool_replicas(*key, desired=target.replicas, ready=ready)
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "replicas": len(states),
            "readyReplicas": ready,
            "updatedReplicas": len(states) - len(outdated),
            "busy": sum(1 for s in states if s.busy),
            "openSessions": sum(s.load.sessions for s in states if s.load is not None),
            "selector": f"{POOL_LABEL}={key[1]}",
        }
        conditions = [
            _ready_condition(target.replicas, len(states), ready, troubles),
            (
                ("True", "AtLimit", target.limited)
                if target.limited
                else ("False", "WithinLimits", f"{target.replicas} pods wanted")
            ),
        ]
        if outdated:
            updated = len(states) - len(outdated)
            waits = f"; {pool.rollout_waits}" if pool.rollout_waits else ""
            message = f"{updated} of {target.replicas} pods from the current template{waits}"
            conditions.append(("True", "RollingOut", message))
        else:
            conditions.append(("True", "Updated", "every pod is from the current template"))
        types = ["Ready", "ScalingLimited", "Progressing"]
        if pool.create_error:
            conditions.append(("True", "FailedCreate", pool.create_error))
            types.append("ReplicaFailure")
        status["conditions"] = merge_conditions(
            [condition(type_, *c, generation) for type_, c in zip(types, conditions, strict=True)],
            (body.get("status") or {}).get("conditions") or [],
            self.clock(),
            keep_absent=False,
        )
        comparable = {**status, "conditions": [_no_time(c) for c in status["conditions"]]}
        if comparable == pool.written_status:
            return
        path = paths.worker_pools(*key, "status")
        try:
            await self.client.patch(path, {"status": status})
        except ApiError as exc:
            if exc.not_found:
                return
            raise
        pool.written_status = comparable

    def _troubles(
        self, key: PoolKey, pool: _Pool, live: list[dict[str, Any]], states: list[PodState]
    ) -> list[tuple[str, str, str]]:
        """(pod, reason, message) of each live pod without a registered worker that
        Kubernetes says is stuck; one Warning Event per distinct reason and message."""
        assert pool.body is not None
        registered = {s.name for s in states if s.load is not None}
        found = []
        for pod in live:
            name = pod["metadata"]["name"]
            said = trouble(pod) if name not in registered else None
            if said is not None:
                found.append((name, *said))
                if said not in pool.troubles_said:
                    pool.troubles_said.add(said)
                    self._event(key, pool.body, "Warning", said[0], f"pod {name}: {said[1]}")
        if not found:
            pool.troubles_said.clear()  # a later failure is news again
        return found

    def _event(
        self,
        key: PoolKey,
        body: dict[str, Any],
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None:
        if self.events is not None:
            ref = ObjectRef(*key, uid=body["metadata"].get("uid", ""), kind="WorkerPool")
            self.events.record(ref, type_, reason, message)

    # ------------------------------------------------------------------ worker loss

    def _report(self, key: PoolKey, pool: _Pool, pod: dict[str, Any], what: Report) -> None:
        """Tell the scheduler the worker of `pod` is draining (its pod is terminating:
        no new work, its running attempts go on) or lost (the pod is gone or ended),
        once each, and only about a worker of this pool it knows."""
        name = pod["metadata"]["name"]
        before = pool.reported.get(name)
        if before == "lost" or before == what:
            return
        w = self.service.worker(name)
        if w is None or w.pool != pool_id_for(*key):
            return
        if (
            before is None
            and not w.alive
            and w.lost_reason is not None
            and is_permanent_loss(w.lost_reason)
        ):
            return  # it knows: lost for good before this controller saw the pod go
        reason, message = _loss(key, pod, w.node, name in pool.scaled_down, name in pool.replaced)
        try:
            if what == "draining":
                self.service.worker_draining(name, reason, message)
            else:
                self.service.worker_lost(name, reason, message)
        except EngineError as exc:
            logger.warning("WorkerPool %s/%s: reporting %s %s: %s", *key, name, what, exc)
            return
        pool.reported[name] = what
        logger.info("WorkerPool %s/%s: worker %s %s: %s", *key, name, what, message)


def _loss(
    key: PoolKey,
    pod: dict[str, Any],
    worker_node: str,
    scaled_down: bool,
    replaced: bool = False,
) -> tuple[str, str]:
    """(reason, message) of the loss of `pod`'s worker; the message names the pod and
    its node."""
    name = pod["metadata"]["name"]
    node = node_of(pod) or worker_node
    where = f"pod {name} on node {node}" if node else f"pod {name}"
    if replaced:
        return "ScaledDown", f"{where} was replaced: pool {key[1]}'s template changed"
    if scaled_down:
        return "ScaledDown", f"{where} was removed: pool {key[1]} scaled down"
    phase = (pod.get("status") or {}).get("phase")
    if evicted(pod):
        return "Evicted", f"{where} was evicted"
    if phase in ("Failed", "Succeeded"):
        return "PodDeleted", f"{where} ended (phase {phase}); the pool replaces it"
    return "PodDeleted", f"{where} was deleted"


def _controller_uid(pod: dict[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _name(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _autoscale_message(target: Target, demand: Demand | None) -> str:
    waiting = (
        f"{demand.queued} tasks and {demand.sessions_waiting} sessions wait for a worker"
        if demand is not None and demand.unmet
        else "nothing waits for a worker"
    )
    limited = f"; {target.limited}" if target.limited else ""
    return f"autoscaled to {target.replicas} pods: {waiting}{limited}"


def _ready_condition(
    wanted: int, pods: int, ready: int, troubles: Sequence[tuple[str, str, str]] = ()
) -> tuple[str, str, str]:
    if wanted == 0 and pods == 0:
        return ("True", "ScaledToZero", "no pods wanted")
    if ready >= wanted and pods == wanted:
        return ("True", "PodsReady", f"{ready} of {wanted} pods ready")
    counted = f"{ready} of {wanted} pods ready ({pods} exist)"
    if troubles:
        pod, reason, message = troubles[0]
        return ("False", reason, f"{counted}; pod {pod}: {reason}: {message}")
    return ("False", "PodsNotReady", counted)


def _trouble_text(pool: _Pool, troubles: Sequence[tuple[str, str, str]]) -> str:
    """Why the pool cannot start a worker, for runs waiting on it ("" if nothing says)."""
    if pool.create_error:
        return pool.create_error
    if troubles:
        pod, reason, message = troubles[0]
        return f"pod {pod}: {reason}: {message}"
    return ""


def _no_time(condition: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in condition.items() if k != "lastTransitionTime"}


def register_handlers(registry: kopf.OperatorRegistry, controller: PoolController) -> None:
    """Feed `controller` the raw watch events of WorkerPools and of pods labelled
    `tether.dev/pool` (`kopf.on.event`: kopf keeps no state on them)."""

    @kopf.on.event(GROUP, VERSION, "workerpools", registry=registry)
    async def _pool_event(event: kopf.RawEvent, **_: Any) -> None:
        await controller.on_pool_event(event["type"], dict(event["object"]))

    @kopf.on.event("", "v1", "pods", labels={POOL_LABEL: kopf.PRESENT}, registry=registry)
    async def _pod_event(event: kopf.RawEvent, **_: Any) -> None:
        await controller.on_pod_event(event["type"], dict(event["object"]))


def setup(registry: kopf.OperatorRegistry, context: OperatorContext) -> PoolController:
    """Plug the WorkerPool controller into the operator (its controller seam)."""
    controller = PoolController(
        context.service,
        context.client,
        scheduler_url=context.settings.scheduler_url,
        events=context.events,
        waiting=context.waiting,
        health=context.pool_health,
    )
    register_handlers(registry, controller)
    context.service.on_registration(controller.worker_registered)
    context.spawn(controller.run)
    return controller
