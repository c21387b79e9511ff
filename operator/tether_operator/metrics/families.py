"""The metric families of a scheduler, and the history events that move them."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tether_types.wire import LOSS_REASONS
from worker_runtime.metrics import LATENCY_BUCKETS, Families, PlainCounter, PlainHistogram

__all__ = ["Metrics"]

COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

RETRY_REASONS = frozenset(
    {*LOSS_REASONS, "StartToCloseTimeout", "HeartbeatTimeout", "ScheduleToCloseTimeout",
     "SchedulerRestarted", "WorkerDraining", "SessionBroken"}
)  # fmt: skip
"""Reasons a retry is labelled with; any other failure (the activity raised) is
`ActivityError`, so a user's error types never become label values."""

WorkflowOf = Callable[[str], str | None]

FLUSH_BATCHES = 512
"""History batches `observe_soon` holds before counting them."""
FLUSH_SECONDS = 1.0
"""The longest `observe_soon` holds a batch (a scrape flushes at once)."""


_SERIES, _READY_AT, _SESSION, _STARTED_AT = range(4)
"""A step is a list, [series, ready_at, session, started_at], not an object: one is made
per scheduled activity on the scheduler's hot path, and a list is the cheapest to make.
series: its activity's `_Series`; ready_at: when its next attempt could start (its
schedule, or its retry's time); session: its session id or None; started_at: its
attempt's start while one runs, else None."""


@dataclass(slots=True)
class _Series:
    """One (workflow, activity)'s label values and its two latency series, found once per
    run and activity so an attempt's observations need no label lookup."""

    labels: tuple[str, str]
    to_start: list[float]
    to_close: list[float]


@dataclass(slots=True)
class _Run:
    """What metrics keep of an open run: its workflow, its unfinished steps by seq, and
    the sessions broken (False) or bound again since (True, until an attempt starts)."""

    workflow: str
    steps: dict[int, list[Any]] = field(default_factory=dict)
    rebound: dict[str, bool] = field(default_factory=dict)
    series: dict[str, _Series] = field(default_factory=dict)
    """By activity name."""


class Metrics:
    """Counters and histograms of runs, activities, sessions and history commits."""

    def __init__(
        self, workflow_of: WorkflowOf | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._pending: list[tuple[str, list[dict[str, Any]]]] = []
        self._flush_armed = False
        self.registry.register(_Flush(self))  # first: what is read is up to date
        self._workflow_of = workflow_of or (lambda run_id: None)
        self._runs: dict[str, _Run] = {}
        self.runs_started = PlainCounter("tether_runs_started", "Runs started.", ["workflow"])
        self.runs_finished = PlainCounter(
            "tether_runs_finished", "Runs that ended, by phase.", ["workflow", "phase"]
        )
        self.schedule_to_start = PlainHistogram(
            "tether_activity_schedule_to_start_seconds",
            "From an activity attempt's schedule (or its retry's time) to its start on a worker.",
            ["workflow", "activity"],
            LATENCY_BUCKETS,
        )
        self.start_to_close = PlainHistogram(
            "tether_activity_start_to_close_seconds",
            "From an activity attempt's start on a worker to its completion or failure.",
            ["workflow", "activity"],
            LATENCY_BUCKETS,
        )
        self.retries = PlainCounter(
            "tether_activity_retries",
            "Activity attempts that failed and will be tried again, by reason.",
            ["workflow", "activity", "reason"],
        )
        self.sessions_broken = PlainCounter(
            "tether_sessions_broken", "Sessions broken, by reason.", ["reason"]
        )
        self.rebinds = PlainCounter(
            "tether_session_rebinds",
            "Sessions bound again after a break; cold_start says whether the new worker "
            "had to load the session's resource again.",
            ["cold_start"],
        )
        self.commit_seconds = PlainHistogram(
            "tether_history_commit_seconds",
            "One append of history to the store (a group of events of one run).",
            ["store"],
            COMMIT_BUCKETS,
        )
        self.commit_events = PlainCounter(
            "tether_history_events_committed", "History events written to the store.", ["store"]
        )
        self.api_requests = PlainCounter(
            "tether_apiserver_requests",
            "Requests of the operator to the Kubernetes API server, by verb and HTTP code "
            "(`error`: no answer came).",
            ["verb", "code"],
        )
        self.commit_failures = PlainCounter(
            "tether_history_commit_failures",
            "Appends of history the store refused or could not take (each is retried).",
            ["store"],
        )
        self.auth_refusals = PlainCounter(
            "tether_auth_refusals",
            "Calls to the scheduler refused: Unauthenticated (401), Forbidden (403) or "
            "AuthUnavailable (503, the identity provider did not answer).",
            ["kind"],
        )
        self.http_seconds = PlainHistogram(
            "tether_http_request_seconds",
            "Requests the scheduler's HTTP API served, by method and route (the route's "
            "template, e.g. /v1/runs/{run_id}; `unmatched` for none).",
            ["method", "route"],
            LATENCY_BUCKETS,
        )
        self._pools: dict[tuple[str, str], tuple[int, int]] = {}
        self.registry.register(
            Families(
                self.runs_started,
                self.runs_finished,
                self.schedule_to_start,
                self.start_to_close,
                self.retries,
                self.sessions_broken,
                self.rebinds,
                self.commit_seconds,
                self.commit_events,
                self.commit_failures,
                self.api_requests,
                self.auth_refusals,
                self.http_seconds,
            )
        )
        self.registry.register(_PoolReplicas(self._pools))

    # ------------------------------------------------------------------ history events

    def observe_soon(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """`observe` later, off the path of a round trip: batches are held until
        `FLUSH_BATCHES` of them wait or `FLUSH_SECONDS` pass, and counted together. The
        values come from the events' own times, so counting late changes none of them;
        reads (`/metrics`) flush first."""
        pending = self._pending
        pending.append((run_id, events))
        if len(pending) >= FLUSH_BATCHES:
            self.flush()
        elif not self._flush_armed:
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._timed_flush)
            except RuntimeError:  # no loop (a synchronous caller): count now
                self.flush()
                return
            self._flush_armed = True

    def _timed_flush(self) -> None:
        self._flush_armed = False
        self.flush()

    def flush(self) -> None:
        """Count every batch `observe_soon` holds."""
        pending, self._pending = self._pending, []
        for run_id, events in pending:
            self.observe(run_id, events)

    def observe(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Count what run `run_id`'s new history events say happened. Never raises.

        The three events every activity attempt writes (scheduled, started, completed)
        are counted inline, without a handler call or a histogram method call: they are
        the scheduler's hot path. The rest go through `_HANDLERS`."""
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run(self._workflow(run_id))
        steps = run.steps
        bounds = self.schedule_to_start.bounds  # the two latency histograms share them
        for ev in events:
            kind = ev["type"]
            try:
                if kind == "ActivityScheduled":
                    d = ev["data"]
                    series = run.series.get(d["activity"]) or self._series(run, d["activity"])
                    steps[d["seq"]] = [series, ev["time"], d.get("session_id"), None]
                elif kind == "ActivityStarted":
                    d = ev["data"]
                    step = steps.get(d["seq"])
                    if step is None:
                        continue  # scheduled before this process started
                    t = step[_STARTED_AT] = ev["time"]
                    value = max(0.0, t - step[_READY_AT])
                    counts = step[_SERIES].to_start
                    counts[bisect_left(bounds, value)] += 1
                    counts[-1] += value
                    if run.rebound and run.rebound.get(step[_SESSION]):
                        del run.rebound[step[_SESSION]]
                        self.rebinds.inc(("true" if d.get("cold_start") else "false",))
                elif kind == "ActivityCompleted":
                    step = steps.pop(ev["data"]["seq"], None)
                    if step is not None and step[_STARTED_AT] is not None:
                        value = max(0.0, ev["time"] - step[_STARTED_AT])
                        counts = step[_SERIES].to_close
                        counts[bisect_left(bounds, value)] += 1
                        counts[-1] += value
                else:
                    handler = _HANDLERS.get(kind)
                    if handler is not None:
                        handler(self, run_id, run, ev["time"], ev["data"])
            except (KeyError, TypeError, ValueError):
                continue  # a shape metrics do not know: count nothing, lose nothing

    def _series(self, run: _Run, activity: str) -> _Series:
        """Run `run`'s `_Series` of `activity`, made on its first attempt."""
        labels = (run.workflow, activity)
        found = run.series[activity] = _Series(
            labels, self.schedule_to_start.series_of(labels), self.start_to_close.series_of(labels)
        )
        return found

    def committed(self, store: str, seconds: float, events: int, ok: bool) -> None:
        """One append of `events` events to `store` took `seconds`."""
        if ok:
            self.commit_seconds.observe((store,), seconds)
            self.commit_events.inc((store,), events)
        else:
            self.commit_failures.inc((store,))

    def api_request(self, method: str, code: str) -> None:
        """One request to the API server answered with `code`."""
        self.api_requests.inc((method, code))

    def refused(self, kind: str) -> None:
        """One call refused with error `kind` (Unauthenticated, Forbidden, AuthUnavailable)."""
        self.auth_refusals.inc((kind,))

    def served(self, method: str, route: str, seconds: float) -> None:
        """One HTTP request to `route` took `seconds`."""
        self.http_seconds.observe((method, route), seconds)

    def pool_replicas(self, namespace: str, pool: str, desired: int, ready: int) -> None:
        """WorkerPool `namespace/pool` wants `desired` pods, of which `ready` serve."""
        self._pools[(namespace, pool)] = (desired, ready)

    def pool_gone(self, namespace: str, pool: str) -> None:
        """WorkerPool `namespace/pool` was deleted: its series go."""
        self._pools.pop((namespace, pool), None)

    def _workflow(self, run_id: str) -> str:
        return self._workflow_of(run_id) or "unknown"

    def _run_started(self, run_id: str, run: _Run, t: float, d: dict[str, Any]) -> None:
        workflow = d.get("workflow")
        if workflow:
            run.workflow = workflow
        self.runs_started.inc((run.workflow,))

    def _run_ended(self, run_id: str, run: _Run, phase: str) -> None:
        self.runs_finished.inc((run.workflow, phase))
        self._runs.pop(run_id, None)

    def _closed(self, run: _Run, t: float, d: dict[str, Any]) -> list[Any] | None:
        step = run.steps.get(d["seq"])
        if step is not None and step[_STARTED_AT] is not None:
            self.start_to_close.observe(step[_SERIES].labels, max(0.0, t - step[_STARTED_AT]))
            step[_STARTED_AT] = None
        return step

    def _failed(self, run_id: str, run: _Run, t: float, d: dict[str, Any]) -> None:
        step = self._closed(run, t, d)
        if step is None:
            return
        retry_at = d.get("retry_at")
        if retry_at is None:
            del run.steps[d["seq"]]
            return
        step[_READY_AT] = float(retry_at)
        reason = (d.get("error") or {}).get("reason")
        label = reason if reason in RETRY_REASONS else "ActivityError"
        self.retries.inc((*step[_SERIES].labels, label))

    def _session_bound(self, run_id: str, run: _Run, t: float, d: dict[str, Any]) -> None:
        if d["session_id"] in run.rebound:
            run.rebound[d["session_id"]] = True

    def _session_broken(self, run_id: str, run: _Run, t: float, d: dict[str, Any]) -> None:
        if d.get("refined"):
            return  # a more specific report about a break already counted
        reason = d.get("reason")
        self.sessions_broken.inc((reason if isinstance(reason, str) else "Unknown",))
        run.rebound[d["session_id"]] = False

    def _session_closed(self, run_id: str, run: _Run, t: float, d: dict[str, Any]) -> None:
        run.rebound.pop(d["session_id"], None)


Handler = Callable[["Metrics", str, _Run, float, dict[str, Any]], None]


def _ended(phase: str) -> Handler:
    def ended(metrics: Metrics, run_id: str, run: _Run, t: float, d: dict[str, Any]) -> None:
        metrics._run_ended(run_id, run, phase)

    return ended


_HANDLERS: dict[str, Handler] = {
    "RunStarted": Metrics._run_started,
    "RunCompleted": _ended("Succeeded"),
    "RunFailed": _ended("Failed"),
    "RunCancelled": _ended("Cancelled"),
    "ActivityFailed": Metrics._failed,
    "SessionBound": Metrics._session_bound,
    "SessionBroken": Metrics._session_broken,
    "SessionClosed": Metrics._session_closed,
}


class _PoolReplicas(Collector):
    """`tether_pool_replicas{namespace, pool, kind}`: desired and ready pods per pool."""

    def __init__(self, pools: dict[tuple[str, str], tuple[int, int]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tether_pool_replicas",
            "Pods of each WorkerPool: desired (spec.replicas, or the autoscaler's target) "
            "and ready (registered workers).",
            labels=["namespace", "pool", "kind"],
        )
        for (namespace, pool), (desired, ready) in sorted(self._pools.items()):
            family.add_metric([namespace, pool, "desired"], desired)
            family.add_metric([namespace, pool, "ready"], ready)
        yield family


class _Flush(Collector):
    """Registered first: counts what `observe_soon` still holds before anything is read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self._metrics.flush()
        return iter(())
