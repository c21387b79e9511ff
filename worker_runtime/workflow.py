"""Workflow definitions and the operations workflow code may call.

``@workflow.define`` marks a class, ``@workflow.entrypoint`` its async method. Inside the
entrypoint use ``execute_child``, ``sleep``, ``now``, ``random``, ``uuid4`` and ``info``
(and call activities). Workflow code must be deterministic: see docs/semantics.md,
"Deterministic workflow code".
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any, TypeVar, overload

from .context import WorkflowInfo, require_workflow
from .errors import StickyChildError
from .protocol import WorkflowSpec
from .schemas import parameters_schema
from .sessions import StickyStrategy

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_DEFINITION_ATTR = "__tether_workflow__"
_ENTRYPOINT_ATTR = "__tether_entrypoint__"

__all__ = [
    "WorkflowDefinition",
    "WorkflowInfo",
    "define",
    "entrypoint",
    "execute_child",
    "get_definition",
    "info",
    "is_workflow",
    "now",
    "random",
    "sleep",
    "uuid4",
]


@dataclass(frozen=True)
class WorkflowDefinition:
    """What ``@workflow.define`` attaches to a class: name, sticky strategy, entrypoint."""

    name: str
    sticky: StickyStrategy | None
    entrypoint: str
    cls: type[Any]
    schedules: tuple[str, ...] = ()
    """Cron expressions: dev mode starts a run at each time they name."""

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of the entrypoint's parameters (computed once; do not modify)."""
        return parameters_schema(getattr(self.cls, self.entrypoint), skip_first=True)

    def spec(self) -> WorkflowSpec:
        """The registration entry for this workflow."""
        return WorkflowSpec(
            name=self.name,
            sticky=self.sticky.value if self.sticky else None,
            input_schema=self.input_schema(),
            schedules=list(self.schedules),
        )


def entrypoint(fn: F) -> F:
    """Mark the async method that runs the workflow."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@workflow.entrypoint needs an async method, got {fn!r}")
    setattr(fn, _ENTRYPOINT_ATTR, True)
    return fn


@overload
def define(cls: type[T], /) -> type[T]: ...


@overload
def define(
    *,
    name: str | None = None,
    sticky: StickyStrategy | str | None = None,
    schedule: str | None = None,
    schedules: Sequence[str] = (),
) -> Callable[[type[T]], type[T]]: ...


def define(
    cls: type[Any] | None = None,
    /,
    *,
    name: str | None = None,
    sticky: StickyStrategy | str | None = None,
    schedule: str | None = None,
    schedules: Sequence[str] = (),
) -> Any:
    """Declare a workflow class. ``sticky=StickyStrategy.SOFT|HARD`` runs the whole
    workflow (its activities and sticky children) on one worker. ``schedule="0 2 * * *"``
    (or several in ``schedules=[...]``; cron, UTC) has `tether dev` start a run without
    input at each time named; on Kubernetes a WorkflowSchedule does that."""
    strategy = StickyStrategy(sticky) if sticky is not None else None
    if isinstance(schedules, str):
        raise TypeError("schedules= takes a list of cron expressions; one goes in schedule=")
    crons = (*([schedule] if schedule is not None else []), *schedules)

    def decorate(c: type[T]) -> type[T]:
        methods = [
            attr for attr, value in inspect.getmembers(c) if getattr(value, _ENTRYPOINT_ATTR, False)
        ]
        if len(methods) != 1:
            found = ", ".join(methods) or "none"
            raise TypeError(
                f"workflow class {c.__name__} needs exactly one @workflow.entrypoint method "
                f"(found: {found})"
            )
        definition = WorkflowDefinition(
            name=name or c.__name__,
            sticky=strategy,
            entrypoint=methods[0],
            cls=c,
            schedules=crons,
        )
        setattr(c, _DEFINITION_ATTR, definition)
        return c

    if cls is not None:
        return decorate(cls)
    return decorate


def is_workflow(obj: object) -> bool:
    """True for a class decorated with ``@workflow.define``."""
    return isinstance(obj, type) and isinstance(
        obj.__dict__.get(_DEFINITION_ATTR), WorkflowDefinition
    )


def get_definition(cls: type[Any]) -> WorkflowDefinition:
    """The WorkflowDefinition of a ``@workflow.define`` class (TypeError otherwise)."""
    definition = cls.__dict__.get(_DEFINITION_ATTR) if isinstance(cls, type) else None
    if not isinstance(definition, WorkflowDefinition):
        raise TypeError(f"{cls!r} is not a workflow: decorate it with @workflow.define")
    return definition


async def execute_child(workflow: type[Any] | str, input: Any = None, sticky: bool = False) -> Any:
    """Start a child workflow run and return its result.

    ``sticky=True`` runs the child on the parent's session worker; the child must
    declare a sticky strategy and be registered on that worker.
    Raises ``ChildWorkflowError`` if the child fails or cannot start.
    """
    instance = require_workflow("workflow.execute_child()")
    if isinstance(workflow, str):
        name, child_sticky = workflow, None
    else:
        definition = get_definition(workflow)
        name, child_sticky = definition.name, definition.sticky
        if sticky and child_sticky is None:
            raise StickyChildError(
                f"cannot start {name!r} as a sticky child: it has no sticky strategy; "
                f"declare it with @workflow.define(name={name!r}, sticky=StickyStrategy.SOFT) "
                f"(or HARD)"
            )
    session_id = instance.session_id
    return await instance.start_child(name, input, sticky=sticky, session_id=session_id)


async def sleep(duration: timedelta | float) -> None:
    """Durable timer: resumes after ``duration``, even if the run moves to another worker.

    ``asyncio.sleep(seconds)`` in workflow code is the same durable timer (except that
    ``asyncio.sleep(0)`` only yields, while ``workflow.sleep(0)`` records a timer).
    """
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    await require_workflow("workflow.sleep()").start_timer(max(0.0, seconds))


def now() -> datetime:
    """The current workflow time (UTC): when history recorded the event that last woke the
    workflow (its first start, or the outcome it awaited). A replay sees the same value;
    use it instead of ``datetime.now()`` or ``time.time()``."""
    return require_workflow("workflow.now()").now()


def random() -> Random:
    """The run's random generator, seeded from its run id: a replay draws the same numbers.

    Use it instead of the ``random`` module (``workflow.random().randint(1, 6)``).
    """
    return require_workflow("workflow.random()").random


def uuid4() -> uuid.UUID:
    """A random UUID drawn from ``workflow.random()``: a replay gets the same one.

    Use it instead of ``uuid.uuid4()``.
    """
    return require_workflow("workflow.uuid4()").uuid4()


def info() -> WorkflowInfo:
    """The current run: id, workflow name, attempt, worker, pod, node, session, replaying."""
    return require_workflow("workflow.info()").info()
