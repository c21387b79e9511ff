"""Scheduler metrics: names Prometheus accepts, and counts that match what ran."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tether_operator.metrics import LeaderCollector, Metrics, serve_metrics
from tether_operator.scheduler import SchedulerService
from tether_operator.store.memory import DurableMemoryStore
from tether_operator.store.sqlite import SqliteStore
from worker_runtime.protocol import ReportRequest
from worker_runtime.worker_metrics import WorkerMetrics

from .conftest import FakeClock, commands, complete, register, schedule, start

NAME = re.compile(r"^tether_[a-z][a-z0-9_]*$")
LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
UNITS = ("_seconds", "_bytes", "_total", "_count", "_sum", "_bucket", "_created")
FORBIDDEN_LABELS = {"run", "run_id", "task_id", "worker_id", "pod", "session"}
"""One series per run or pod would grow without bound: those go in logs and the UI."""


def value(svc: SchedulerService, name: str, **labels: str) -> float:
    got = svc.metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def completion(task_id: str, ok: bool, **extra: Any) -> ReportRequest:
    return ReportRequest.model_validate(
        {"completions": [{"task_id": task_id, "ok": ok, **extra}], "max_tasks": 8}
    )


def test_every_family_is_named_and_labelled_as_prometheus_asks() -> None:
    families = list(SchedulerService().metrics.registry.collect())
    assert len(families) >= 12
    for family in families:
        assert NAME.match(family.name), family.name
        assert family.documentation, f"{family.name} has no help text"
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client appends it once
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), f"{family.name}: histograms are times"
        for sample in family.samples:
            assert set(sample.labels) & FORBIDDEN_LABELS == set(), sample
            assert all(LABEL.match(k) for k in sample.labels), sample


async def test_a_run_moves_each_family_by_what_happened(
    service: SchedulerService, clock: FakeClock
) -> None:
    register(service)
    run_id = start(service)
    assert value(service, "tether_runs_started_total", workflow="wf") == 1
    assert value(service, "tether_runs_open") == 1
    (wf,) = await service.poll("w1", 8, 0)
    out = service.report("w1", commands(run_id, wf["task_id"], schedule(1), schedule(2)))
    first, second = out["tasks"]
    assert value(service, "tether_worker_slots", pool="", state="busy") == 2
    clock.tick(2.0)
    service.report("w1", completion(first["task_id"], True, result=1))
    clock.tick(1.0)
    failed = completion(second["task_id"], False, error={"type": "ValueError", "message": "no"})
    service.report("w1", failed)
    labels = {"workflow": "wf", "activity": "act"}
    assert value(service, "tether_activity_start_to_close_seconds_count", **labels) == 2
    assert value(service, "tether_activity_start_to_close_seconds_sum", **labels) == 5.0
    assert value(service, "tether_activity_retries_total", reason="ActivityError", **labels) == 1
    assert value(service, "tether_activity_schedule_to_start_seconds_count", **labels) == 2

    # The retry starts after its backoff: schedule-to-start counts from the retry's time.
    retry_at = service.engine.runs[run_id].activities[2].retry_at
    assert retry_at is not None
    clock.now = retry_at + 0.25
    service.advance()
    (again,) = await service.poll("w1", 8, 0)
    assert again["attempt"] == 2
    assert value(service, "tether_activity_schedule_to_start_seconds_count", **labels) == 3
    assert value(service, "tether_activity_schedule_to_start_seconds_sum", **labels) == 0.25
    service.report("w1", completion(again["task_id"], True, result=2))
    # The resolutions went to the workflow's worker with the reports' answers.
    service.report("w1", commands(run_id, wf["task_id"], complete(3, "done")))
    assert value(service, "tether_runs_finished_total", workflow="wf", phase="Succeeded") == 1
    assert value(service, "tether_runs_open") == 0
    assert value(service, "tether_activity_start_to_close_seconds_count", **labels) == 3


async def test_history_commits_of_a_durable_store_are_timed_by_store(
    service: SchedulerService,
) -> None:
    durable = SchedulerService(store=DurableMemoryStore())
    await durable.start()
    try:
        for svc in (service, durable):
            register(svc)
            start(svc)
            await svc.history_writer.flush()
    finally:
        await durable.stop()
    assert value(durable, "tether_history_commit_seconds_count", store="memory") >= 1
    assert value(durable, "tether_history_events_committed_total", store="memory") >= 1
    # Dev mode's store is not durable: there is no commit to time.
    assert value(service, "tether_history_commit_seconds_count", store="memory") == 0


async def test_the_bytes_a_store_took_are_read_at_each_scrape(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "history.db")
    await store.open()
    durable = SchedulerService(store=store)
    await durable.start()
    try:
        assert value(durable, "tether_history_bytes_committed_total", store="sqlite") == 0
        register(durable)
        start(durable)
        await durable.history_writer.flush()
        written = value(durable, "tether_history_bytes_committed_total", store="sqlite")
        assert written == store.bytes_written > 100
    finally:
        await durable.stop()
        await store.close()
    # A store that keeps nothing has no such series.
    assert (
        SchedulerService().metrics.registry.get_sample_value(
            "tether_history_bytes_committed_total", {"store": "memory"}
        )
        is None
    )


def test_pool_replicas_are_gauges_until_the_pool_goes() -> None:
    metrics = Metrics()
    metrics.pool_replicas("team", "ml", desired=3, ready=2)
    got = metrics.registry.get_sample_value
    assert got("tether_pool_replicas", {"namespace": "team", "pool": "ml", "kind": "desired"}) == 3
    assert got("tether_pool_replicas", {"namespace": "team", "pool": "ml", "kind": "ready"}) == 2
    metrics.pool_gone("team", "ml")
    assert got("tether_pool_replicas", {"namespace": "team", "pool": "ml", "kind": "ready"}) is None


def test_a_session_break_and_its_rebind_are_counted() -> None:
    metrics = Metrics()
    sid = "r1/s0"
    history: list[dict[str, Any]] = [
        {"type": "RunStarted", "time": 0.0, "data": {"workflow": "ml"}},
        {"type": "SessionOpened", "time": 0.0, "data": {"session_id": sid, "strategy": "SOFT"}},
        {"type": "SessionBound", "time": 0.1, "data": {"session_id": sid, "worker": "w1"}},
        {"type": "SessionBroken", "time": 1.0, "data": {"session_id": sid, "reason": "PodDeleted"}},
        {
            "type": "SessionBroken",
            "time": 1.0,
            "data": {"session_id": sid, "reason": "PodDeleted", "refined": True},
        },
        {"type": "SessionBound", "time": 1.2, "data": {"session_id": sid, "worker": "w2"}},
        {
            "type": "ActivityScheduled",
            "time": 1.2,
            "data": {"seq": 3, "activity": "predict", "session_id": sid},
        },
        {"type": "ActivityStarted", "time": 1.3, "data": {"seq": 3, "cold_start": True}},
    ]
    metrics.observe("r1", history)
    sample = metrics.registry.get_sample_value
    assert sample("tether_sessions_broken_total", {"reason": "PodDeleted"}) == 1
    assert sample("tether_session_rebinds_total", {"cold_start": "true"}) == 1
    # An event shape metrics do not know counts nothing and raises nothing.
    metrics.observe("r1", [{"type": "ActivityStarted", "time": "soon", "data": {}}])


async def test_the_endpoint_serves_the_text_format_and_nothing_else() -> None:
    metrics = Metrics()
    metrics.runs_started.inc(("wf",))
    server = await serve_metrics(metrics.registry, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            page = await client.get("/metrics")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/plain")
            names = {f.name for f in text_string_to_metric_families(page.text)}
            assert "tether_runs_started" in names
            assert (await client.get("/")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
    finally:
        server.close()
        await server.wait_closed()


def test_the_leader_and_its_epoch_are_gauges() -> None:
    metrics = Metrics()
    state: dict[str, Any] = {"leading": False, "epoch": None}
    metrics.registry.register(LeaderCollector(lambda: state["leading"], lambda: state["epoch"]))
    sample = metrics.registry.get_sample_value
    assert (sample("tether_leader"), sample("tether_leader_epoch")) == (0, None)
    state.update(leading=True, epoch=7)
    assert (sample("tether_leader"), sample("tether_leader_epoch")) == (1, 7)


REPO = Path(__file__).resolve().parents[3]
SERIES = re.compile(r"\btether_[a-z_]+")


def served_series() -> set[str]:
    """Every series name the scheduler and the operator serve (a counter's `_total`,
    a histogram's `_bucket`, `_sum` and `_count`)."""
    registry = SchedulerService(store=DurableMemoryStore()).metrics.registry  # + store bytes
    registry.register(LeaderCollector(lambda: True, lambda: 1))
    names = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_docs_list_every_family_and_the_dashboard_and_alerts_use_only_served_ones() -> None:
    served = served_series()
    docs = (REPO / "docs" / "metrics.md").read_text()
    table = docs.split("## Families", 1)[1].split("## Worker metrics", 1)[0]
    documented = {m for m in re.findall(r"^\| `(tether_[a-z_]+)`", table, re.M)}
    families = {n for n in served if not n.endswith(("_bucket", "_sum", "_count"))}
    assert documented == {n for n in families if n + "_total" not in served}
    workers = docs.split("## Worker metrics", 1)[1].split("## Where", 1)[0]
    worker_families = set()
    for family in WorkerMetrics(lambda: 0, 1).registry.collect():
        worker_families.add(family.name + ("_total" if family.type == "counter" else ""))
    assert set(re.findall(r"^\| `(tether_[a-z_]+)`", workers, re.M)) == worker_families
    used = set(SERIES.findall((REPO / "charts/tether/dashboards/tether.json").read_text()))
    used |= set(SERIES.findall((REPO / "charts/tether/templates/prometheusrule.yaml").read_text()))
    assert used
    assert used <= served, f"not served: {sorted(used - served)}"
