"""WorkflowLoop: the deterministic event loop one workflow instance runs on.

Workflow code never runs on the worker's own event loop. Its tasks and futures belong
to a ``WorkflowLoop``, which the instance *activates* on the worker's thread whenever
something arrives (the start, a recorded or live outcome): the loop runs every ready
callback until none is left, then returns. Nothing else moves it, so the order in
which workflow code runs depends only on the order of the outcomes, which history
records.

- ``time()`` is workflow time: the recorded time of the last history event that woke
  the workflow, never the wall clock.
- ``call_later``/``call_at`` (and so ``asyncio.sleep``, ``asyncio.timeout``,
  ``asyncio.wait_for``) become durable timers through the ``durable_timer`` callback.
- I/O, executors, subprocesses and threads raise ``NonDeterministicCallError``
  (``REFUSED``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from contextvars import Context
from typing import Any, NoReturn, TypeVar, TypeVarTuple, Unpack

from . import workflow_guard
from .errors import NonDeterministicCallError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

log = logging.getLogger("worker_runtime.workflow")

DurableTimer = Callable[[float, asyncio.TimerHandle], None]
"""Starts a durable timer of ``delay`` seconds that puts ``handle`` back on the loop."""

_ACTIVITY = workflow_guard.USE_ACTIVITY
_NETWORK = workflow_guard.NETWORK
_THREADS = "runs code on another thread, outside the workflow's event loop: " + _ACTIVITY
_PROCESS = workflow_guard.PROCESS
_FDS = "waits on a file descriptor, which a replay cannot reproduce: " + _ACTIVITY
_SIGNALS = "handles the worker process's signals: " + _ACTIVITY


class WorkflowLoop(asyncio.AbstractEventLoop):
    """An event loop stepped by its workflow instance, with time taken from history."""

    def __init__(self, start_time: float, durable_timer: DurableTimer) -> None:
        self._time = start_time
        self._durable_timer = durable_timer
        self._ready: deque[asyncio.Handle] = deque()
        self._running = False
        self._exception_handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], Any] | None
        self._exception_handler = None

    # ------------------------------------------------------------------ stepping

    def activate(self) -> None:
        """Run ready callbacks until none is left, as the running loop of this thread.

        Re-entrant calls return at once: the outer activation runs what they added.
        """
        if self._running:
            return
        self._running = True
        outer = asyncio.events._get_running_loop()
        hooks = sys.get_asyncgen_hooks()
        asyncio.events._set_running_loop(self)
        sys.set_asyncgen_hooks(firstiter=None, finalizer=self._finalize_asyncgen)
        try:
            with workflow_guard.guarded():
                ready = self._ready
                while ready:
                    handle = ready.popleft()
                    if not handle.cancelled():
                        handle._run()
        finally:
            sys.set_asyncgen_hooks(*hooks)
            asyncio.events._set_running_loop(outer)
            self._running = False

    def advance_to(self, when: float | None) -> None:
        """Move workflow time forward to ``when`` (never backwards; None leaves it)."""
        if when is not None and when > self._time:
            self._time = when

    def fire(self, handle: asyncio.TimerHandle) -> None:
        """A durable timer fired: run its callback at the next activation."""
        if not handle.cancelled():
            self._ready.append(handle)

    def _finalize_asyncgen(self, agen: AsyncGenerator[Any, Any]) -> None:
        # An async generator of workflow code was dropped unfinished: close it on this
        # loop (at the next activation), never on the worker's.
        self._ready.append(asyncio.Handle(self.create_task, (agen.aclose(),), self))

    # ------------------------------------------------------------------ time

    def time(self) -> float:
        """Workflow time, Unix seconds: the same value on every replay."""
        return self._time

    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        """Run ``callback`` after ``delay`` seconds of workflow time (a durable timer)."""
        return self.call_at(self._time + delay, callback, *args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        """Run ``callback`` at workflow time ``when`` (a durable timer if in the future)."""
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        delay = when - self._time
        if delay > 0:
            self._durable_timer(delay, handle)
        else:
            self._ready.append(handle)
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        """Called by TimerHandle.cancel(). A durable timer cannot be taken back: history
        records it firing, and ``fire`` skips the cancelled handle (live and on replay)."""

    # ------------------------------------------------------------------ callbacks, tasks

    def call_soon(
        self,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: Context | None = None,
    ) -> asyncio.Handle:
        """Run ``callback`` in this activation, after the callbacks already ready."""
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        """A future bound to this loop."""
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, None, T],
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> asyncio.Task[T]:
        """A task of workflow code, run by this loop's activations."""
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def is_running(self) -> bool:
        """True during an activation."""
        return self._running

    def is_closed(self) -> bool:
        """Never closed: the loop lives as long as its workflow instance."""
        return False

    def get_debug(self) -> bool:
        """asyncio debug mode is off: it reads the wall clock."""
        return False

    def set_debug(self, enabled: bool) -> None:
        """Ignored (see ``get_debug``)."""

    # ------------------------------------------------------------------ errors

    def get_exception_handler(
        self,
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], Any] | None:
        """The handler set by ``set_exception_handler``, if any."""
        return self._exception_handler

    def set_exception_handler(
        self, handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], Any] | None
    ) -> None:
        """Replace the default handler (which logs) for errors nobody retrieved."""
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log an error that no workflow code retrieved (e.g. a failed background task)."""
        exc = context.get("exception")
        what = context.get("task") or context.get("future")
        with workflow_guard.unguarded():
            log.error(
                "%s%s",
                context.get("message", "unhandled error in workflow code"),
                f" ({what!r})" if what is not None else "",
                exc_info=(type(exc), exc, exc.__traceback__)
                if isinstance(exc, BaseException)
                else None,
            )

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Report an error that no workflow code retrieved."""
        if self._exception_handler is None:
            self.default_exception_handler(context)
        else:
            self._exception_handler(self, context)

    # ------------------------------------------------------------------ not for workflows

    def get_task_factory(self) -> None:
        """Tasks are plain ``asyncio.Task`` objects."""
        return None

    def run_forever(self) -> NoReturn:
        """Refused: only the workflow instance drives this loop."""
        raise RuntimeError("a workflow's event loop is driven by its worker; it cannot be run")

    def run_until_complete(self, future: Any) -> NoReturn:
        """Refused: only the workflow instance drives this loop."""
        raise RuntimeError("a workflow's event loop is driven by its worker; it cannot be run")

    def stop(self) -> NoReturn:
        """Refused: only the workflow instance drives this loop."""
        raise RuntimeError("a workflow's event loop is driven by its worker; it cannot be stopped")

    def close(self) -> NoReturn:
        """Refused: only the workflow instance drives this loop."""
        raise RuntimeError("a workflow's event loop is driven by its worker; it cannot be closed")

    async def shutdown_asyncgens(self) -> None:
        """Nothing to do: dropped async generators are closed at the next activation."""

    async def shutdown_default_executor(self) -> None:
        """Nothing to do: there is no executor."""


REFUSED: dict[str, tuple[str, str]] = {
    "call_soon_threadsafe": ("loop.call_soon_threadsafe()", _THREADS),
    "run_in_executor": ("loop.run_in_executor() (and asyncio.to_thread())", _THREADS),
    "set_default_executor": ("loop.set_default_executor()", _THREADS),
    "set_task_factory": (
        "loop.set_task_factory()",
        "would change how workflow tasks run: use asyncio.create_task as it is",
    ),
    "getaddrinfo": ("loop.getaddrinfo()", _NETWORK),
    "getnameinfo": ("loop.getnameinfo()", _NETWORK),
    "create_connection": ("loop.create_connection() (asyncio.open_connection())", _NETWORK),
    "create_server": ("loop.create_server() (asyncio.start_server())", _NETWORK),
    "create_datagram_endpoint": ("loop.create_datagram_endpoint()", _NETWORK),
    "create_unix_connection": ("loop.create_unix_connection()", _NETWORK),
    "create_unix_server": ("loop.create_unix_server()", _NETWORK),
    "connect_accepted_socket": ("loop.connect_accepted_socket()", _NETWORK),
    "start_tls": ("loop.start_tls()", _NETWORK),
    "sendfile": ("loop.sendfile()", _NETWORK),
    "sock_recv": ("loop.sock_recv()", _NETWORK),
    "sock_recv_into": ("loop.sock_recv_into()", _NETWORK),
    "sock_recvfrom": ("loop.sock_recvfrom()", _NETWORK),
    "sock_recvfrom_into": ("loop.sock_recvfrom_into()", _NETWORK),
    "sock_sendall": ("loop.sock_sendall()", _NETWORK),
    "sock_sendto": ("loop.sock_sendto()", _NETWORK),
    "sock_connect": ("loop.sock_connect()", _NETWORK),
    "sock_accept": ("loop.sock_accept()", _NETWORK),
    "sock_sendfile": ("loop.sock_sendfile()", _NETWORK),
    "connect_read_pipe": ("loop.connect_read_pipe()", _FDS),
    "connect_write_pipe": ("loop.connect_write_pipe()", _FDS),
    "subprocess_exec": ("asyncio.create_subprocess_exec()", _PROCESS),
    "subprocess_shell": ("asyncio.create_subprocess_shell()", _PROCESS),
    "add_reader": ("loop.add_reader()", _FDS),
    "remove_reader": ("loop.remove_reader()", _FDS),
    "add_writer": ("loop.add_writer()", _FDS),
    "remove_writer": ("loop.remove_writer()", _FDS),
    "add_signal_handler": ("loop.add_signal_handler()", _SIGNALS),
    "remove_signal_handler": ("loop.remove_signal_handler()", _SIGNALS),
}
"""Loop methods workflow code must not use -> (the call as users write it, why)."""


def _refusal(call: str, advice: str) -> Callable[..., NoReturn]:
    def refuse(self: WorkflowLoop, *args: Any, **kwargs: Any) -> NoReturn:
        raise NonDeterministicCallError(call, advice)

    refuse.__doc__ = f"Refused: {call} {advice}."
    return refuse


for _method, (_call, _advice) in REFUSED.items():
    setattr(WorkflowLoop, _method, _refusal(_call, _advice))
