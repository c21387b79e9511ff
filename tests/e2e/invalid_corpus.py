"""Hand-written bad Workflows, WorkflowRuns and WorkerPools, each with the field the API
server's refusal must name (tests/e2e/test_invalid_corpus.py).

Each entry is (id, object, field): the object is valid but for one mistake a user could
make, and the field is the path the message has to contain.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.kube import API_VERSION

CONTAINER = {"name": "worker", "image": "tether:dev"}
TEMPLATE = {"spec": {"containers": [CONTAINER]}}

Entry = tuple[str, dict[str, Any], str]


def _obj(kind: str, name: str, spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def workflow(name: str, **spec: Any) -> dict[str, Any]:
    return _obj("Workflow", name, spec)


def run(name: str, **spec: Any) -> dict[str, Any]:
    return _obj("WorkflowRun", name, {"workflowRef": {"name": "wf"}, **spec})


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return _obj("WorkerPool", name, {"template": TEMPLATE, **spec})


def _many(
    make: Any, stem: str, field: str, key: str, values: list[Any], **also: Any
) -> list[Entry]:
    """One entry per bad value of ``key``."""
    return [
        (f"{stem}-{i}", make(f"{stem}-{i}", **{key: value}, **also), field)
        for i, value in enumerate(values)
    ]


BAD_NAMES: list[Any] = ["", "Gpu_Pool", "-pool", "pool-", "a..b", "UPPER", "x" * 254, 7, ["a"]]
BAD_STICKY: list[Any] = ["soft", "MEDIUM", "", "NONE", 1, True]
BAD_DURATIONS: list[Any] = ["5 minutes", "0s", "-1m", "", "5", "1y", "m5", 300, "1.5.2s"]


def _retry(stem: str, field: str, values: list[Any]) -> list[Entry]:
    key = field.rpartition(".")[2]
    return [
        (f"{stem}-{i}", workflow(f"{stem}-{i}", retry={key: value}), f"spec.retry.{key}")
        for i, value in enumerate(values)
    ]


def _template(stem: str, field: str, templates: list[Any]) -> list[Entry]:
    return [
        (f"{stem}-{i}", _obj("WorkerPool", f"{stem}-{i}", {"template": t}), field)
        for i, t in enumerate(templates)
    ]


WORKFLOWS: list[Entry] = [
    *_many(workflow, "wf-pool", "spec.workerPool", "workerPool", BAD_NAMES),
    *_many(workflow, "wf-sticky", "spec.sticky", "sticky", BAD_STICKY),
    *_many(workflow, "wf-timeout", "spec.scheduleTimeout", "scheduleTimeout", BAD_DURATIONS),
    (
        "wf-timeout-soft",
        workflow("wf-timeout-soft", sticky="SOFT", scheduleTimeout="1m"),
        "spec.scheduleTimeout",
    ),
    *_retry("wf-attempts", "maxAttempts", [0, -1, "3", 1.5]),
    *_retry("wf-initial", "initialInterval", ["fast", "-1s", 1, ""]),
    *_retry("wf-coefficient", "backoffCoefficient", [0.5, 0, -1, "2"]),
    *_retry("wf-max", "maxInterval", ["soon", 10, "-5m"]),
    *_retry("wf-non-retryable", "nonRetryableErrors", ["ValueError", [1], [None]]),
    (
        "wf-intervals",
        workflow("wf-intervals", retry={"initialInterval": "2m", "maxInterval": "1m"}),
        "spec.retry.initialInterval",
    ),
    (
        "wf-retry-unknown",
        workflow("wf-retry-unknown", retry={"attempts": 3}),
        "spec.retry.attempts",
    ),
    ("wf-retry-list", workflow("wf-retry-list", retry=[{"maxAttempts": 3}]), "spec.retry"),
    ("wf-unknown", workflow("wf-unknown", colour="red"), "spec.colour"),
    ("wf-spec-string", _obj("Workflow", "wf-spec-string", "ml"), "spec"),
]

RUNS: list[Entry] = [
    ("run-no-ref", _obj("WorkflowRun", "run-no-ref", {"input": {"x": 1}}), "spec.workflowRef"),
    (
        "run-ref-empty",
        _obj("WorkflowRun", "run-ref-empty", {"workflowRef": {}}),
        "spec.workflowRef.name",
    ),
    (
        "run-ref-string",
        _obj("WorkflowRun", "run-ref-string", {"workflowRef": "wf"}),
        "spec.workflowRef",
    ),
    (
        "run-ref-unknown",
        _obj(
            "WorkflowRun", "run-ref-unknown", {"workflowRef": {"name": "wf", "namespace": "other"}}
        ),
        "spec.workflowRef.namespace",
    ),
    *[
        (
            f"run-ref-name-{i}",
            _obj("WorkflowRun", f"run-ref-name-{i}", {"workflowRef": {"name": value}}),
            "spec.workflowRef.name",
        )
        for i, value in enumerate(BAD_NAMES)
    ],
    *_many(run, "run-pool", "spec.workerPool", "workerPool", BAD_NAMES),
    *_many(run, "run-sticky", "spec.sticky", "sticky", BAD_STICKY),
    *_many(run, "run-timeout", "spec.scheduleTimeout", "scheduleTimeout", BAD_DURATIONS),
    (
        "run-timeout-soft",
        run("run-timeout-soft", sticky="SOFT", scheduleTimeout="1m"),
        "spec.scheduleTimeout",
    ),
    *_many(
        run,
        "run-ttl",
        "spec.ttlSecondsAfterFinished",
        "ttlSecondsAfterFinished",
        [-1, "10", 1.5, True],
    ),
    ("run-unknown", run("run-unknown", colour="red"), "spec.colour"),
    (
        "run-spec-list",
        _obj("WorkflowRun", "run-spec-list", [{"workflowRef": {"name": "wf"}}]),
        "spec",
    ),
]

POOLS: list[Entry] = [
    *_many(pool, "wp-replicas", "spec.replicas", "replicas", [-1, "2", 1.5]),
    *_many(pool, "wp-min", "spec.minReplicas", "minReplicas", [-1, "1"]),
    *_many(pool, "wp-max", "spec.maxReplicas", "maxReplicas", [0, -3, "4"]),
    (
        "wp-min-above-max",
        pool("wp-min-above-max", replicas=2, minReplicas=3, maxReplicas=2),
        "spec.minReplicas",
    ),
    ("wp-above-max", pool("wp-above-max", replicas=5, maxReplicas=4), "spec.replicas"),
    ("wp-below-min", pool("wp-below-min", replicas=1, minReplicas=2), "spec.replicas"),
    ("wp-autoscale-no-max", pool("wp-autoscale-no-max", autoscale=True), "spec.maxReplicas"),
    ("wp-autoscale-string", pool("wp-autoscale-string", autoscale="yes"), "spec.autoscale"),
    *_many(pool, "wp-slots", "spec.slots", "slots", [0, -1, 10_001, "8"]),
    *_many(pool, "wp-capacity", "spec.sessionCapacity", "sessionCapacity", [0, 10_001, "4"]),
    *_many(pool, "wp-idle", "spec.idleTimeout", "idleTimeout", ["5 minutes", 300, "-5m", "5"]),
    ("wp-no-template", _obj("WorkerPool", "wp-no-template", {"replicas": 1}), "spec.template"),
    *_template(
        "wp-template",
        "spec.template.spec",
        [{}, {"metadata": {"labels": {"a": "b"}}}, {"spec": "pod"}],
    ),
    *_template(
        "wp-containers",
        "spec.template.spec.containers",
        [{"spec": {}}, {"spec": {"containers": []}}, {"spec": {"containers": "worker"}}],
    ),
    *_template(
        "wp-container-name",
        "spec.template.spec.containers[0].name",
        [
            {"spec": {"containers": [{"image": "tether:dev"}]}},
            {"spec": {"containers": [{"name": "", "image": "tether:dev"}]}},
        ],
    ),
    *_template(
        "wp-labels",
        "spec.template.metadata.labels.team",
        [
            {"metadata": {"labels": {"team": 1}}, **TEMPLATE},
            {"metadata": {"labels": {"team": True}}, **TEMPLATE},
        ],
    ),
    *_template(
        "wp-annotations",
        "spec.template.metadata.annotations.note",
        [{"metadata": {"annotations": {"note": 2}}, **TEMPLATE}],
    ),
    ("wp-unknown", pool("wp-unknown", colour="red"), "spec.colour"),
    ("wp-name-64", _obj("WorkerPool", "p" * 64, {"template": TEMPLATE}), "metadata.name"),
    (
        "wp-rollout-stuck",
        pool("wp-rollout-stuck", rollout={"maxSurge": 0}),
        "spec.rollout.maxSurge",
    ),
    (
        "wp-rollout-surge",
        pool("wp-rollout-surge", rollout={"maxSurge": -1}),
        "spec.rollout.maxSurge",
    ),
    (
        "wp-rollout-unavailable",
        pool("wp-rollout-unavailable", rollout={"maxUnavailable": "1"}),
        "spec.rollout.maxUnavailable",
    ),
    (
        "wp-rollout-grace",
        pool("wp-rollout-grace", rollout={"sessionGrace": "ten minutes"}),
        "spec.rollout.sessionGrace",
    ),
    (
        "wp-template-unknown",
        _obj("WorkerPool", "wp-template-unknown", {"template": {**TEMPLATE, "colour": "red"}}),
        "spec.template.colour",
    ),
]


def schedule(name: str, **spec: Any) -> dict[str, Any]:
    return _obj(
        "WorkflowSchedule",
        name,
        {"schedules": ["0 2 * * *"], "workflowRef": {"name": "report"}, **spec},
    )


BAD_CRONS: list[Any] = [
    "",
    "* * * *",
    "* * * * * * *",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * * 13 *",
    "* * * * 8",
    "* * * FOO *",
    "*/0 * * * *",
    "@every 5m",
    "@reboot",
    "1;2 * * * *",
    "every day",
    7,
]
BAD_ZONES: list[Any] = ["Mars/Olympus", "Local", "", "Europe/", "UTC+1", "../etc/passwd", 1]

SCHEDULES: list[Entry] = [
    *[
        (f"wfs-cron-{i}", schedule(f"wfs-cron-{i}", schedules=[cron]), "spec.schedules[0]")
        for i, cron in enumerate(BAD_CRONS)
    ],
    ("wfs-no-schedules", schedule("wfs-no-schedules", schedules=[]), "spec.schedules"),
    (
        "wfs-schedules-string",
        schedule("wfs-schedules-string", schedules="@daily"),
        "spec.schedules",
    ),
    *_many(schedule, "wfs-zone", "spec.timeZone", "timeZone", BAD_ZONES),
    *_many(
        schedule, "wfs-policy", "spec.concurrencyPolicy", "concurrencyPolicy", ["allow", "Queue", 1]
    ),
    *_many(schedule, "wfs-catch-up", "spec.catchUpPolicy", "catchUpPolicy", ["none", "Every", ""]),
    *_many(
        schedule,
        "wfs-deadline",
        "spec.startingDeadlineSeconds",
        "startingDeadlineSeconds",
        [-1, "60s", 1.5],
    ),
    *_many(schedule, "wfs-max-catch-up", "spec.maxCatchUp", "maxCatchUp", [-1, 101, "5"]),
    *_many(schedule, "wfs-suspend", "spec.suspend", "suspend", ["yes", 1]),
    *_many(
        schedule,
        "wfs-success-limit",
        "spec.successfulRunsHistoryLimit",
        "successfulRunsHistoryLimit",
        [-1, 1001],
    ),
    *_many(
        schedule,
        "wfs-failed-limit",
        "spec.failedRunsHistoryLimit",
        "failedRunsHistoryLimit",
        [-1, "1"],
    ),
    *_many(schedule, "wfs-pool", "spec.workerPool", "workerPool", BAD_NAMES[:4]),
    *_many(schedule, "wfs-sticky", "spec.sticky", "sticky", BAD_STICKY[:3]),
    (
        "wfs-timeout-soft",
        schedule("wfs-timeout-soft", sticky="SOFT", scheduleTimeout="1m"),
        "spec.scheduleTimeout",
    ),
    ("wfs-ttl", schedule("wfs-ttl", ttlSecondsAfterFinished=-5), "spec.ttlSecondsAfterFinished"),
    (
        "wfs-no-ref",
        _obj("WorkflowSchedule", "wfs-no-ref", {"schedules": ["@daily"]}),
        "spec.workflowRef",
    ),
    ("wfs-unknown", schedule("wfs-unknown", colour="red"), "spec.colour"),
    ("wfs-name-53", schedule("s" * 53), "metadata.name"),
]

CORPUS: list[Entry] = [*WORKFLOWS, *RUNS, *POOLS, *SCHEDULES]
