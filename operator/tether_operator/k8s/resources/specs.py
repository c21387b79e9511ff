"""The custom resources Tether serves (group `tether.dev`, version `v1alpha1`).

Each kind is a pydantic model with camelCase aliases and a docstring under every
field; `crdgen` turns their JSON Schema into the CRDs under `crds/`, so the field
descriptions are what `kubectl explain` prints. Cross-field checks are written once
as `Rule`s: the CRD carries them as CEL (`x-kubernetes-validations`), the models run
the same check in Python, both with the same message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from tether_types.wire import (
    DEFAULT_BACKOFF_COEFFICIENT,
    DEFAULT_INITIAL_INTERVAL,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_INTERVAL,
)

GROUP = "tether.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# --------------------------------------------------------------------------- durations

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A Kubernetes-style duration: numbers with units ms, s, m, h, e.g. `30s`, `5m`, `1h30m`."""

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `30s`, `1m30s` or `250ms`; ValueError if malformed."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (ms, s, m, h), "
            "e.g. 30s, 5m or 1h30m"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """The duration `seconds` as written in a resource: `5m`, `100s`, `250ms`."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole and whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def _well_formed(text: str) -> str:
    parse_duration(text)
    return text


def _positive(text: str) -> str:
    if parse_duration(text) <= 0:
        raise ValueError("must be longer than 0s")
    return text


_POSITIVE_CEL = {"rule": "duration(self) > duration('0s')", "message": "must be longer than 0s"}

Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, max_length=64),
    AfterValidator(_well_formed),
]
"""A duration string (`DURATION_PATTERN`); zero is allowed."""

PositiveDuration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=64,
        json_schema_extra={"x-kubernetes-validations": [_POSITIVE_CEL]},
    ),
    AfterValidator(_well_formed),
    AfterValidator(_positive),
]
"""A duration string (`DURATION_PATTERN`) longer than zero."""

# --------------------------------------------------------------------------- vocabulary

StickyName = Literal["SOFT", "HARD"]
"""A sticky session strategy (`worker_runtime.StickyStrategy`)."""

RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
SessionState = Literal["Open", "Broken", "Closed"]
ActivityState = Literal["Scheduled", "Running", "Backoff", "Completed", "Failed", "Cancelled"]
ConditionStatus = Literal["True", "False", "Unknown"]

_NAME_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_PATTERN = rf"^{_NAME_LABEL}(\.{_NAME_LABEL})*$"
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME_PATTERN)]
"""The name of a Kubernetes object in the same namespace (a DNS subdomain)."""

_PRESERVE: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}


@dataclass(frozen=True)
class Rule:
    """A cross-field check, as CEL for the apiserver and as Python for the models.

    `cel` and `check` must agree; the apiserver reports `message` at `field_path`
    (relative to the object the rule sits on; "" for a field the CRD's schema does not
    describe, such as metadata's, which the message then names), and the model raises it.
    """

    cel: str
    message: str
    field_path: str
    check: Callable[[Any], bool]

    def validation(self) -> dict[str, str]:
        """The rule as one `x-kubernetes-validations` entry."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


class Resource(BaseModel):
    """Base of every model here: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()
    """Cross-field checks of this object (see `Rule`)."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.validation() for rule in cls.rules]
        return schema

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = [rule.message for rule in self.rules if not rule.check(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self


class Open(Resource):
    """A model that keeps fields it does not declare (parts of other APIs)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_PRESERVE)


# --------------------------------------------------------------------------- shared parts


class Condition(Resource):
    """One aspect of the object's state, in the Kubernetes convention (`kubectl wait`)."""

    type: str = Field(max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[A-Za-z0-9_.]+$")
    """CamelCase kind of condition, e.g. `Succeeded`, `Failed`, `SessionBroken`, `Ready`."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    """CamelCase reason for the last transition, e.g. `SessionBroken`, `PodDeleted`."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details of the last transition."""
    last_transition_time: datetime
    """When `status` last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` the condition was computed from; `kubectl wait` ignores
    a condition whose observedGeneration is older than the object's generation."""


Conditions = Annotated[
    list[Condition],
    Field(
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    ),
]


class ErrorInfo(Resource):
    """A failure: the exception's class name, its message and a reason."""

    type: str
    """Exception class name, e.g. `ValueError` or `StartToCloseTimeout`."""
    message: str = ""
    """The exception's message."""
    reason: str | None = None
    """CamelCase reason a user can grep for (`SessionBroken`, `HeartbeatTimeout`, ...)."""


class RetryPolicy(Resource):
    """Exponential backoff: the wait after attempt n is initialInterval *
    backoffCoefficient**(n-1), at most maxInterval."""

    rules = (
        Rule(
            cel="duration(self.initialInterval) <= duration(self.maxInterval)",
            message="initialInterval must not exceed maxInterval",
            field_path=".initialInterval",
            check=lambda r: parse_duration(r.initial_interval) <= parse_duration(r.max_interval),
        ),
    )

    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1)
    """Total attempts of an activity, the first included."""
    initial_interval: Duration = format_duration(DEFAULT_INITIAL_INTERVAL)
    """Wait before the second attempt (a duration)."""
    backoff_coefficient: float = Field(default=DEFAULT_BACKOFF_COEFFICIENT, ge=1.0)
    """Factor by which the wait grows after each attempt."""
    max_interval: Duration = format_duration(DEFAULT_MAX_INTERVAL)
    """Longest wait between two attempts (a duration)."""
    non_retryable_errors: list[str] = Field(default_factory=list)
    """Exception class names that fail the activity at once, without retry."""


# --------------------------------------------------------------------------- Workflow

_TIMEOUT_NEEDS_HARD = Rule(
    cel="!has(self.scheduleTimeout) || !has(self.sticky) || self.sticky == 'HARD'",
    message="scheduleTimeout applies only to HARD sessions: set sticky: HARD or remove it",
    field_path=".scheduleTimeout",
    check=lambda s: s.schedule_timeout is None or s.sticky in (None, "HARD"),
)


class WorkflowSpec(Resource):
    """What the user declares about a workflow: who serves it and its runs' defaults."""

    rules = (_TIMEOUT_NEEDS_HARD,)

    worker_pool: ObjectName | None = None
    """The WorkerPool whose workers run this workflow; absent: any worker that registers it."""
    sticky: StickyName | None = None
    """Default sticky strategy of its runs (a run's spec.sticky overrides it): SOFT rebinds a
    lost worker's session elsewhere, HARD waits for the same pod. Absent: the strategy the
    workflow's code declares."""
    schedule_timeout: PositiveDuration | None = None
    """How long a HARD session waits for its lost worker before the run fails with
    SessionBroken (a duration, e.g. 5m); absent: 5m."""
    retry: RetryPolicy | None = None
    """Default retry policy of its activities, where their code sets none."""


class ActivityOptions(Resource):
    """An activity's options, as its worker registered them."""

    start_to_close_timeout: Duration | None = None
    """Longest time one attempt may run; absent: no limit."""
    heartbeat_timeout: Duration | None = None
    """Longest time between two heartbeats of a running attempt; absent: not checked."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """How failed attempts are retried."""
    sticky_to_worker: bool = False
    """Whether the activity joins the run's sticky session when called outside one."""


class RegisteredActivity(Resource):
    """An activity the workflow's workers registered."""

    name: str
    """The activity's registered name."""
    options: ActivityOptions = Field(default_factory=ActivityOptions)
    """Its timeouts, retry policy and stickiness."""
    input_schema: dict[str, Any] | None = None
    """JSON Schema of its parameters, from their type hints; absent: inputs are not checked."""


class WorkflowStatus(Resource):
    """What the operator learned from the workers that registered the workflow."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Conditions: `Ready` is True while some live worker serves the workflow."""
    sticky: StickyName | None = None
    """The sticky strategy the workflow's code declares, if any."""
    input_schema: dict[str, Any] | None = None
    """JSON Schema of the entrypoint's parameters; a run's spec.input is checked against it."""
    activities: list[RegisteredActivity] = Field(default_factory=list)
    """The activities its workers registered, with their options."""
    activity_count: int = Field(default=0, ge=0)
    """How many activities its workers registered (the Activities column)."""
    serving_pools: str = ""
    """Comma-separated names of the WorkerPools whose live pods serve it (the Pools column)."""
    pods: list[str] = Field(default_factory=list)
    """Names of the live pods that registered it."""


class ObjectMeta(Open):
    """Standard Kubernetes object metadata (only the fields Tether reads are typed)."""

    name: str | None = None
    """The object's name."""
    namespace: str | None = None
    """The object's namespace."""
    generation: int | None = None
    """Incremented by the apiserver on every change of spec."""
    labels: dict[str, str] = Field(default_factory=dict)
    """The object's labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """The object's annotations."""


class Object(Resource):
    """Fields every resource has: apiVersion, kind and metadata."""

    api_version: str = API_VERSION
    """The versioned schema of this object: tether.dev/v1alpha1."""
    kind: str
    """The kind of object."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""


class Workflow(Object):
    """A workflow users can run: which pool serves it and the defaults of its runs."""

    kind: Literal["Workflow"] = "Workflow"
    """The kind of object: Workflow."""
    spec: WorkflowSpec = Field(default_factory=WorkflowSpec)
    """What the user declares about the workflow."""
    status: WorkflowStatus | None = None
    """What the operator learned from worker registrations."""


# --------------------------------------------------------------------------- WorkflowRun


class WorkflowRef(Resource):
    """A reference to a Workflow in the run's namespace."""

    name: ObjectName
    """The Workflow's name."""


class WorkflowRunSpec(Resource):
    """One execution of a workflow, with its input and overrides."""

    rules = (_TIMEOUT_NEEDS_HARD,)

    workflow_ref: WorkflowRef
    """The Workflow to run (in the run's namespace)."""
    input: Any = Field(default=None, json_schema_extra=_PRESERVE)
    """The workflow's input, any JSON value: an object whose keys are all parameter names is
    passed as keyword arguments, anything else as the single argument; absent: no arguments.
    Checked against the Workflow's status.inputSchema before the run starts."""
    sticky: StickyName | None = None
    """Sticky strategy of the run, overriding the Workflow's: SOFT or HARD."""
    schedule_timeout: PositiveDuration | None = None
    """How long a HARD session waits for its lost worker before the run fails with
    SessionBroken (a duration, e.g. 5m); absent: the Workflow's, else 5m."""
    worker_pool: ObjectName | None = None
    """The WorkerPool to run on, overriding the Workflow's spec.workerPool."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Seconds after the run finishes before it is deleted; absent: it is kept."""


class SessionBinding(Resource):
    """One time a session was bound to a pod, and how that ended."""

    pod: str | None = None
    """The pod (the worker id when it runs outside Kubernetes)."""
    node: str | None = None
    """The node of that pod."""
    bound_at: datetime | None = None
    """When the session was bound there (RFC 3339, milliseconds)."""
    ended_at: datetime | None = None
    """When the binding ended; absent while it lasts."""
    reason: str | None = None
    """Why it ended (PodDeleted, Evicted, ScaledDown, NodeLost, HeartbeatTimeout,
    ProcessExited, ...); absent while it lasts or when the session closed."""


class SessionRecord(Resource):
    """A sticky session of the run: which pod it is bound to, and whether it still is."""

    id: str
    """The session's id."""
    strategy: StickyName
    """SOFT (rebinds when its worker is lost) or HARD (waits for the same pod)."""
    state: SessionState
    """Open, Broken (its worker was lost) or Closed."""
    pod: str | None = None
    """The pod it is bound to."""
    node: str | None = None
    """The node of that pod."""
    reason: str | None = None
    """Why it last broke: PodDeleted, Evicted, ScaledDown, NodeLost, HeartbeatTimeout, ..."""
    message: str | None = None
    """Details of the last break."""
    broken_at: datetime | None = None
    """When it broke, while it is Broken (RFC 3339, milliseconds)."""
    bindings: list[SessionBinding] = Field(default_factory=list)
    """Its bindings, oldest first (the latest 20)."""


class ActivityRecord(Resource):
    """An activity the run scheduled, as of its latest attempt."""

    seq: int = Field(ge=0)
    """The workflow step that scheduled it."""
    name: str
    """The activity's name."""
    state: ActivityState
    """Scheduled, Running, Backoff (waiting to retry), Completed, Failed or Cancelled."""
    attempt: int = Field(ge=1)
    """The latest attempt, counting from 1."""
    pod: str | None = None
    """The pod that ran the latest attempt."""
    node: str | None = None
    """The node of that pod."""
    session: str | None = None
    """The sticky session it ran in, if any."""
    scheduled_time: datetime | None = None
    """When it was scheduled."""
    start_time: datetime | None = None
    """When the latest attempt started."""
    completion_time: datetime | None = None
    """When it completed or finally failed."""
    error: ErrorInfo | None = None
    """The latest attempt's failure, if it failed."""


class ResultRef(Resource):
    """Where a result too large for the status is kept."""

    config_map: str | None = None
    """The first ConfigMap (owned by the run) holding the result, gzip-compressed JSON under
    binaryData key `gz`; a large one continues in the ConfigMaps named like it with the last
    number counting up to chunks - 1. Absent until it is written."""
    chunks: int | None = Field(default=None, ge=1)
    """How many ConfigMaps hold the result."""
    bytes: int = Field(ge=0)
    """Size of the result as JSON."""


class WorkflowRunStatus(Resource):
    """The run's progress, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Conditions: Succeeded, Failed, SessionBroken, ... (`kubectl wait --for=condition=...`)."""
    phase: RunPhase | None = None
    """Pending, Running, Succeeded, Failed or Cancelled."""
    worker_pod: str | None = None
    """The WORKER-POD column: the pod the run's open sticky session is bound to, else the
    pod of its latest activity attempt, else the pod running its workflow code."""
    progress: str | None = Field(default=None, pattern=r"^[0-9]+/[0-9]+$")
    """done/total of the activities and child runs scheduled so far, e.g. 3/20 (failed ones
    count as done)."""
    start_time: datetime | None = None
    """When the run started."""
    completion_time: datetime | None = None
    """When the run finished."""
    activities: list[ActivityRecord] = Field(default_factory=list)
    """The activities the run scheduled, in seq order: every one while there are at most
    50, else the failed ones and the most recent (activitiesOmitted counts the rest)."""
    activities_omitted: int = Field(default=0, ge=0)
    """How many activity records are left out of activities to keep the status small."""
    sessions: list[SessionRecord] = Field(default_factory=list)
    """The run's sticky sessions."""
    result: Any = Field(default=None, json_schema_extra=_PRESERVE)
    """The workflow's result (any JSON), once it succeeded, if its JSON is at most 16 KiB;
    a larger one is in resultRef."""
    result_ref: ResultRef | None = None
    """Where a result over 16 KiB is kept (it is not copied into the status)."""
    error: ErrorInfo | None = None
    """Why the run failed, once it failed."""


class WorkflowRun(Object):
    """One execution of a workflow."""

    kind: Literal["WorkflowRun"] = "WorkflowRun"
    """The kind of object: WorkflowRun."""
    spec: WorkflowRunSpec
    """Which workflow to run, its input and overrides."""
    status: WorkflowRunStatus | None = None
    """The run's progress, written by the operator."""


# --------------------------------------------------------------------------- WorkerPool


class PodTemplateMetadata(Open):
    """Labels and annotations of the pool's pods (Tether adds its own)."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of every pod."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of every pod."""


class Container(Open):
    """A container of the worker pod (any field of a Kubernetes Container)."""

    name: str = Field(min_length=1)
    """The container's name."""


class PodSpec(Open):
    """The worker pod's spec: any field of a Kubernetes PodSpec."""

    containers: list[Container] = Field(min_length=1)
    """The pod's containers; one of them runs `worker_runtime.run_worker`."""


class PodTemplate(Resource):
    """The pods the pool creates: an ordinary PodTemplateSpec."""

    metadata: PodTemplateMetadata = Field(default_factory=PodTemplateMetadata)
    """Labels and annotations of every pod."""
    spec: PodSpec
    """The pod's spec."""


class RolloutPolicy(Resource):
    """How the pool replaces its pods after `spec.template` (or `slots`,
    `sessionCapacity`) changes, as a Deployment's rolling update does."""

    rules = (
        Rule(
            cel="self.maxSurge + self.maxUnavailable >= 1",
            message="maxSurge and maxUnavailable cannot both be 0: a rollout could not start",
            field_path=".maxSurge",
            check=lambda r: r.max_surge + r.max_unavailable >= 1,
        ),
    )

    max_surge: int = Field(default=1, ge=0, le=1000)
    """Pods the rollout may create above the wanted count."""
    max_unavailable: int = Field(default=0, ge=0, le=1000)
    """Ready pods the rollout may take below the wanted count."""
    session_grace: Duration | None = None
    """How long an outdated pod holding sticky sessions is kept for them to end (then it
    drains and its sessions break: SOFT ones move, HARD ones fail); absent: until they
    end. A pod without sessions is replaced as soon as the counts allow (its running
    activities finish first: it drains)."""


class WorkerPoolSpec(Resource):
    """A set of identical worker pods that the operator creates, scales and deletes."""

    rules = (
        Rule(
            cel="!has(self.minReplicas) || self.minReplicas <= self.replicas",
            message="replicas must not be below minReplicas",
            field_path=".replicas",
            check=lambda s: s.min_replicas is None or s.min_replicas <= s.replicas,
        ),
        Rule(
            cel="!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
            message="replicas must not exceed maxReplicas",
            field_path=".replicas",
            check=lambda s: s.max_replicas is None or s.replicas <= s.max_replicas,
        ),
        Rule(
            cel="!has(self.minReplicas) || !has(self.maxReplicas) || "
            "self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            field_path=".minReplicas",
            check=lambda s: (
                s.min_replicas is None or s.max_replicas is None or s.min_replicas <= s.max_replicas
            ),
        ),
        Rule(
            cel="!self.autoscale || has(self.maxReplicas)",
            message="autoscale needs maxReplicas, the most pods it may create",
            field_path=".maxReplicas",
            check=lambda s: not s.autoscale or s.max_replicas is not None,
        ),
    )

    replicas: int = Field(default=1, ge=0)
    """Desired number of worker pods (`kubectl scale wp/NAME --replicas=N` sets it)."""
    min_replicas: int | None = Field(default=None, ge=0)
    """Fewest pods: replicas may not go below it (autoscaling included)."""
    max_replicas: int | None = Field(default=None, ge=1)
    """Most pods: replicas may not exceed it (autoscaling included)."""
    slots: int = Field(default=8, ge=1, le=10_000)
    """Concurrent activities per worker."""
    session_capacity: int = Field(default=4, ge=1, le=10_000)
    """Concurrent sticky sessions per worker."""
    idle_timeout: Duration = "5m"
    """How long a pod stays without tasks or sessions before autoscaling may remove it."""
    autoscale: bool = False
    """Whether the operator sets replicas from the queued work, between minReplicas and
    maxReplicas."""
    template: PodTemplate
    """The pods to create: an ordinary PodTemplateSpec."""
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    """How pods are replaced when the template changes: idle pods first, pods with sessions
    once their sessions end (or after sessionGrace)."""


class WorkerPoolStatus(Resource):
    """The pool's pods as the operator last saw them."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Conditions: `Ready` (every desired pod's worker registered), `ScalingLimited`
    (minReplicas or maxReplicas holds the count back), `Progressing` (a rollout is
    replacing pods made from an older template, or is complete) and, while pods cannot
    be created or keep ending, `ReplicaFailure`."""
    replicas: int = Field(default=0, ge=0)
    """Pods that exist and are not being deleted (the scale subresource's status.replicas)."""
    ready_replicas: int = Field(default=0, ge=0)
    """Pods whose worker is registered and ready for tasks."""
    updated_replicas: int = Field(default=0, ge=0)
    """Pods made from the current template (the others wait to be replaced)."""
    busy: int = Field(default=0, ge=0)
    """Pods running an activity or holding an open sticky session."""
    open_sessions: int = Field(default=0, ge=0)
    """Open sticky sessions on the pool's pods."""
    selector: str = ""
    """Label selector of the pool's pods (for `kubectl scale` and HorizontalPodAutoscalers)."""


class WorkerPool(Object):
    """A pool of worker pods; it has a scale subresource, so HPAs and `kubectl scale` work."""

    rules = (
        Rule(
            cel="self.metadata.name.size() <= 63",
            message="metadata.name: a WorkerPool's name is the tether.dev/pool label of its "
            "pods, so at most 63 characters",
            field_path="",
            check=lambda p: p.metadata.name is None or len(p.metadata.name) <= 63,
        ),
    )

    kind: Literal["WorkerPool"] = "WorkerPool"
    """The kind of object: WorkerPool."""
    spec: WorkerPoolSpec
    """How many pods, their capacity and their template."""
    status: WorkerPoolStatus | None = None
    """The pool's pods as the operator last saw them."""


# --------------------------------------------------------------------------- WorkflowSchedule

ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]
CatchUpPolicy = Literal["None", "Last", "All"]


def _cel_string(text: str) -> str:
    """`text` as a CEL raw string literal."""
    if "'" in text:
        raise ValueError(f"{text!r} cannot be a raw CEL string")
    return f"r'{text}'"


def _cron_pattern() -> str:
    """A regular expression (RE2, for CEL) of the cron expressions `engine.schedules`
    takes: five fields, or six with a leading second, each value within its range; or
    a macro. What it lets through (a backwards range, a day no month has) the
    operator reports in the schedule's `Ready` condition."""
    sixty = "[0-5]?[0-9]"
    months = "0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
    weekdays = "[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)"
    values = [sixty, "[01]?[0-9]|2[0-3]", "0?[1-9]|[12][0-9]|3[01]", months, weekdays]

    def field(value: str) -> str:
        item = f"(\\*|({value})(-({value}))?)(/[1-9][0-9]*)?"
        return f"{item}(,{item})*"

    fields = "\\s+".join(field(v) for v in values)
    macros = "@(?i:yearly|annually|monthly|weekly|daily|midnight|hourly)"
    return f"^\\s*(({field(sixty)})\\s+)?{fields}\\s*$|^\\s*{macros}\\s*$"


CRON_PATTERN = _cron_pattern()
_CRON = re.compile(CRON_PATTERN)

_TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"


def _cron(text: str) -> str:
    if not _CRON.match(text):
        raise ValueError(f"{text!r} is not a cron expression")
    return text


CronExpression = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches({_cel_string(CRON_PATTERN)})",
                    "message": "not a cron expression: give five fields, minute hour "
                    "day-of-month month day-of-week (e.g. '0 2 * * *'; names such as MON and "
                    "JAN, lists, ranges and */steps allowed), six with a leading second, "
                    "or a macro: @yearly, @monthly, @weekly, @daily, @hourly",
                }
            ]
        },
    ),
    AfterValidator(_cron),
]
"""A cron expression (`engine.schedules`), checked by CEL in the CRD."""


class ScheduleRun(Resource):
    """A run the schedule started."""

    name: ObjectName
    """The WorkflowRun's name."""
    scheduled_time: datetime | None = None
    """The slot it was started for; absent for a run started by a trigger."""


class WorkflowScheduleSpec(Resource):
    """When to start runs of a workflow, with what input, and what to do when they overlap."""

    rules = (_TIMEOUT_NEEDS_HARD,)

    schedules: list[CronExpression] = Field(min_length=1, max_length=16)
    """Cron expressions, as a CronJob's schedule: five fields (minute hour day-of-month
    month day-of-week) or six with a leading second, or a macro (@hourly, @daily, ...).
    A run starts at every time any of them names."""
    time_zone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        pattern=_TIME_ZONE_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self != 'Local' && "
                    "timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0",
                    "message": "not an IANA time zone: give one such as UTC, Europe/Berlin "
                    "or America/New_York",
                }
            ]
        },
    )
    """The IANA time zone the expressions are read in, e.g. Europe/Berlin. A time that a
    daylight-saving change skips fires once, when the clocks resume; a time that happens
    twice fires once, the first time."""
    workflow_ref: WorkflowRef
    """The Workflow to run (in the schedule's namespace)."""
    input: Any = Field(default=None, json_schema_extra=_PRESERVE)
    """Each run's input, as a WorkflowRun's spec.input."""
    sticky: StickyName | None = None
    """Each run's sticky strategy, as a WorkflowRun's spec.sticky."""
    schedule_timeout: PositiveDuration | None = None
    """Each run's scheduleTimeout, as a WorkflowRun's (HARD sessions only)."""
    worker_pool: ObjectName | None = None
    """Each run's WorkerPool, as a WorkflowRun's spec.workerPool."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Each run's ttlSecondsAfterFinished: seconds after it finishes before it is deleted
    (the history limits delete finished runs too)."""
    concurrency_policy: ConcurrencyPolicy = "Allow"
    """What to do when a run is due while an earlier one is still active: Allow starts it
    too; Forbid skips it (with an Event); Replace cancels the active ones and starts it."""
    starting_deadline_seconds: int | None = Field(default=None, ge=0)
    """How late a run may start after its time (the operator was down, or leadership
    moved). Absent: the latest missed time starts however late, as a CronJob's."""
    catch_up_policy: CatchUpPolicy = "None"
    """What to do with times missed beyond the starting deadline: None skips them; Last
    starts the latest one if no time is on time; All starts each, the latest maxCatchUp."""
    max_catch_up: int = Field(default=10, ge=0, le=100)
    """The most missed times catchUpPolicy All starts at once."""
    suspend: bool = False
    """Start no runs. Times passed while suspended are skipped, not caught up on resume;
    a trigger still starts a run."""
    successful_runs_history_limit: int = Field(default=3, ge=0, le=1000)
    """Finished runs that succeeded to keep; older ones are deleted."""
    failed_runs_history_limit: int = Field(default=1, ge=0, le=1000)
    """Finished runs that failed or were cancelled to keep; older ones are deleted."""


class WorkflowScheduleStatus(Resource):
    """What the schedule did, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Conditions: `Ready` (the expressions and time zone are usable; False with the reason
    otherwise) and `Suspended`."""
    last_schedule_time: datetime | None = None
    """The latest time a run was started for."""
    next_schedule_time: datetime | None = None
    """The next time a run is due; absent while suspended."""
    last_slot_time: datetime | None = None
    """The latest time acted on, started or skipped: times up to it are never started again."""
    active: list[ScheduleRun] = Field(default_factory=list)
    """The runs it started that have not finished."""
    active_count: int = Field(default=0, ge=0)
    """How many runs are active (the ACTIVE column)."""
    last_run: str | None = None
    """The run it started last."""
    last_run_phase: RunPhase | None = None
    """That run's phase."""
    last_successful_time: datetime | None = None
    """When a run it started last succeeded."""
    last_trigger: str | None = None
    """The tether.dev/trigger annotation value the latest triggered run was started for."""


class WorkflowSchedule(Object):
    """Runs of a workflow started on a cron schedule, as a CronJob starts Jobs."""

    rules = (
        Rule(
            cel="self.metadata.name.size() <= 52",
            message="metadata.name: a WorkflowSchedule's name starts its runs' names (with "
            "a time after it) and is their tether.dev/schedule label, so at most 52 "
            "characters, as a CronJob's",
            field_path="",
            check=lambda s: s.metadata.name is None or len(s.metadata.name) <= 52,
        ),
    )

    kind: Literal["WorkflowSchedule"] = "WorkflowSchedule"
    """The kind of object: WorkflowSchedule."""
    spec: WorkflowScheduleSpec
    """When to start runs, of what, and what to do when they overlap."""
    status: WorkflowScheduleStatus | None = None
    """What the schedule did, written by the operator."""
