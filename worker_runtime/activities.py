"""``@activity``: the decorator, the ActivityDefinition it returns, and how a call is routed.

A call ``await my_activity(x)`` runs:

- inline, when made from inside another activity (the parent is the unit of retry);
- as a local activity, from workflow code inside ``with run_activities_locally():``;
- as a remote activity (a ``schedule_activity`` command), from other workflow code;
- directly, outside any workflow or activity (scripts, unit tests).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from tether_types.wire import (
    DEFAULT_BACKOFF_COEFFICIENT,
    DEFAULT_INITIAL_INTERVAL,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_INTERVAL,
)

from .context import ActivityInfo, current_activity, current_workflow, local_activities
from .errors import TetherError
from .protocol import ActivityOptions, ActivitySpec, RetryField, RetryPolicy
from .schemas import parameters_schema

P = ParamSpec("P")
R = TypeVar("R")

Seconds = timedelta | float | int


def to_seconds(value: Seconds | None, what: str) -> float | None:
    """Convert a ``timedelta`` or a number of seconds to float seconds (None stays None)."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {seconds}")
    return seconds


def _error_names(errors: Iterable[str | type[BaseException]]) -> list[str]:
    return [e if isinstance(e, str) else e.__name__ for e in errors]


class ActivityDefinition(Generic[P, R]):
    """A decorated activity function. Await a call to run it (see module docstring).

    Attributes: ``name`` (registration name), ``options`` (``protocol.ActivityOptions``),
    ``fn`` (the undecorated function), ``is_async``.
    """

    def __init__(self, fn: Callable[P, Any], name: str, options: ActivityOptions) -> None:
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self._options_payload: dict[str, Any] | None = None
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<activity {self.name!r}>"

    def options_payload(self) -> dict[str, Any]:
        """``options.model_dump()``, computed once (commands carry it on every call)."""
        if self._options_payload is None:
            self._options_payload = self.options.model_dump()
        return self._options_payload

    def spec(self) -> ActivitySpec:
        """The registration entry for this activity."""
        return ActivitySpec(
            name=self.name, options=self.options, input_schema=parameters_schema(self.fn)
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the activity; await the returned coroutine for its result."""
        return self._dispatch(args, kwargs)

    async def _dispatch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        if current_activity.get() is None:
            instance = current_workflow.get()
            if instance is not None:
                if local_activities.get():
                    return cast(R, await instance.run_local_activity(self, args, kwargs))
                return cast(R, await instance.schedule_activity(self, args, kwargs))
        return await self.run_inline(args, kwargs)

    async def run_inline(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> R:
        """Run the function here and now: no retry, no payload checks."""
        if self.is_async:
            return await cast(Callable[..., Awaitable[R]], self.fn)(*args, **kwargs)
        return cast(Callable[..., R], self.fn)(*args, **kwargs)


def _make_options(
    *,
    name: str | None = None,
    start_to_close_timeout: Seconds | None = None,
    heartbeat_timeout: Seconds | None = None,
    retry_policy_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_policy_backoff_coefficient: float = DEFAULT_BACKOFF_COEFFICIENT,
    retry_policy_initial_interval: Seconds = DEFAULT_INITIAL_INTERVAL,
    retry_policy_max_interval: Seconds = DEFAULT_MAX_INTERVAL,
    non_retryable_errors: Iterable[str | type[BaseException]] = (),
    sticky_to_worker: bool = False,
) -> tuple[str | None, ActivityOptions]:
    return name, ActivityOptions(
        start_to_close_timeout=to_seconds(start_to_close_timeout, "start_to_close_timeout"),
        heartbeat_timeout=to_seconds(heartbeat_timeout, "heartbeat_timeout"),
        retry=RetryPolicy(
            max_attempts=retry_policy_max_attempts,
            backoff_coefficient=retry_policy_backoff_coefficient,
            initial_interval=to_seconds(retry_policy_initial_interval, "initial interval"),
            max_interval=to_seconds(retry_policy_max_interval, "max interval"),
            non_retryable_errors=_error_names(non_retryable_errors),
        ),
        sticky_to_worker=sticky_to_worker,
    )


_RETRY_ARGUMENTS: dict[str, RetryField] = {
    "retry_policy_max_attempts": "max_attempts",
    "retry_policy_backoff_coefficient": "backoff_coefficient",
    "retry_policy_initial_interval": "initial_interval",
    "retry_policy_max_interval": "max_interval",
    "non_retryable_errors": "non_retryable_errors",
}
"""Decorator argument -> the retry field it sets (the others come from the workflow)."""


def _options(arguments: dict[str, Any]) -> tuple[str | None, ActivityOptions]:
    """Name and options of ``@activity(**arguments)``, noting which retry fields it set."""
    name, options = _make_options(**arguments)
    options.retry_set = [field for arg, field in _RETRY_ARGUMENTS.items() if arg in arguments]
    return name, options


def _decorate(
    fn: Callable[..., Any], name: str | None, options: ActivityOptions
) -> ActivityDefinition[..., Any]:
    if isinstance(fn, ActivityDefinition):
        raise TypeError(f"{fn.name!r} is already an activity")
    if not callable(fn):
        raise TypeError(f"@activity decorates a function, got {type(fn).__name__}")
    return ActivityDefinition(fn, name or str(getattr(fn, "__name__", repr(fn))), options)


class _Decorate(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> ActivityDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> ActivityDefinition[P, R]: ...


class ActivityDecorator:
    """``activity``: decorate a function as an activity; also ``activity.heartbeat/info``.

    Use as ``@activity``, ``@activity()`` or ``@activity(name=..., start_to_close_timeout=...)``.
    Timeouts and intervals are ``timedelta`` or seconds.
    """

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> ActivityDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> ActivityDefinition[P, R]: ...

    @overload
    def __call__(
        self,
        *,
        name: str | None = None,
        start_to_close_timeout: Seconds | None = None,
        heartbeat_timeout: Seconds | None = None,
        retry_policy_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_policy_backoff_coefficient: float = DEFAULT_BACKOFF_COEFFICIENT,
        retry_policy_initial_interval: Seconds = DEFAULT_INITIAL_INTERVAL,
        retry_policy_max_interval: Seconds = DEFAULT_MAX_INTERVAL,
        non_retryable_errors: Iterable[str | type[BaseException]] = (),
        sticky_to_worker: bool = False,
    ) -> _Decorate: ...

    def __call__(self, *args: Any, **options: Any) -> Any:
        if args:
            if len(args) != 1 or options or not callable(args[0]):
                raise TypeError("use @activity, @activity() or @activity(name=..., ...)")
            return _decorate(args[0], None, ActivityOptions(retry_set=[]))
        name, activity_options = _options(options)
        return functools.partial(_decorate, name=name, options=activity_options)

    @staticmethod
    def heartbeat(details: Any = None) -> None:
        """Report progress from a running activity (no-op outside a remote activity).

        Raises ``ActivityCancelledError`` in a synchronous activity the scheduler cancelled.
        """
        ctx = current_activity.get()
        if ctx is not None:
            ctx.heartbeat(details)

    @staticmethod
    def info() -> ActivityInfo:
        """The current activity attempt: run, attempt, worker, pod, node, session, cold_start."""
        ctx = current_activity.get()
        if ctx is None:
            raise TetherError("activity.info() can only be called from inside an activity")
        return ctx.info


activity = ActivityDecorator()
"""Decorate a function as an activity. Also carries ``activity.heartbeat`` and ``activity.info``."""
