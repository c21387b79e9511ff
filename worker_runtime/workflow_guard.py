"""Catches calls that workflow code must not make: blocking, I/O, processes and threads.

While a workflow activation runs (``guarded()``), such calls raise
``NonDeterministicCallError`` naming the call and what to use instead. The checks are
a ``sys.addaudithook`` hook (installed once per process, on the first workflow
activation) for the audited calls, and guarded ``time.sleep`` and
``threading.Thread.start`` (module attributes) for the two that Python 3.11 does not
audit. Only the thread running an activation is checked: activities in the worker's
thread pool, log handlers, and everything outside an activation are untouched.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import NonDeterministicCallError

# The endings of refusal messages, shared with the workflow loop's own refusals.
USE_ACTIVITY = "call it from an activity instead"
_SLEEP = (
    "blocks the worker and is not replayed: use `await workflow.sleep(seconds)` "
    "(a durable timer) instead"
)
_FILES = "reads or writes a file, which a replay cannot reproduce: " + USE_ACTIVITY
NETWORK = "talks to the network, which a replay cannot reproduce: " + USE_ACTIVITY
PROCESS = "starts a process, which a replay cannot reproduce: " + USE_ACTIVITY
_THREAD = (
    "runs code outside the workflow's deterministic event loop: use asyncio tasks "
    "(asyncio.gather, asyncio.create_task) or an activity instead"
)

FORBIDDEN: dict[str, tuple[str, str]] = {
    "time.sleep": ("time.sleep()", _SLEEP),
    "open": ("open()", _FILES),
    "builtins.input": ("input()", "blocks the worker waiting for a terminal: " + USE_ACTIVITY),
    "socket.__new__": ("socket.socket()", NETWORK),
    "socket.connect": ("socket.connect()", NETWORK),
    "socket.bind": ("socket.bind()", NETWORK),
    "socket.getaddrinfo": ("socket.getaddrinfo()", NETWORK),
    "socket.gethostbyname": ("socket.gethostbyname()", NETWORK),
    "socket.gethostbyaddr": ("socket.gethostbyaddr()", NETWORK),
    "subprocess.Popen": ("subprocess.Popen()", PROCESS),
    "os.system": ("os.system()", PROCESS),
    "os.exec": ("os.exec*()", PROCESS),
    "os.posix_spawn": ("os.posix_spawn()", PROCESS),
    "os.spawn": ("os.spawn*()", PROCESS),
    "os.fork": ("os.fork()", PROCESS),
    "os.forkpty": ("os.forkpty()", PROCESS),
    "_thread.start_new_thread": ("starting a thread", _THREAD),
    "_thread.start_joinable_thread": ("starting a thread", _THREAD),
}
"""Audit event -> (the call as users write it, why it is refused and what to use)."""

_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".zip", ".egg")
"""Files the interpreter itself opens for workflow code: imports (zipimport too) and
traceback lines."""
_PYCACHE = f"{os.sep}__pycache__{os.sep}"

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

_state = threading.local()
_installed = False


def _zone_dirs() -> tuple[str, ...]:
    dirs = [os.path.join(p, "") for p in zoneinfo.TZPATH]
    tzdata = importlib.util.find_spec("tzdata")
    if tzdata is not None and tzdata.submodule_search_locations:
        dirs.extend(os.path.join(p, "") for p in tzdata.submodule_search_locations)
    return tuple(dirs)


_READ_ONLY_DIRS = _zone_dirs()
"""Time-zone data (``zoneinfo.ZoneInfo``): static, so reading it is deterministic."""


@contextmanager
def guarded() -> Iterator[None]:
    """Refuse forbidden calls on this thread for the duration (activations nest)."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


@contextmanager
def unguarded() -> Iterator[None]:
    """Allow every call on this thread for the duration (the worker's own bookkeeping)."""
    depth = getattr(_state, "depth", 0)
    _state.depth = 0
    try:
        yield
    finally:
        _state.depth = depth


def install() -> None:
    """Install the audit hook and the guarded functions, once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.addaudithook(_audit)
    # Python 3.11 audits neither call: wrap the module attributes. Where a later
    # version audits them, the hook also catches aliases bound before this ran.
    time.sleep = _guard("time.sleep", time.sleep)
    threading.Thread.start = _guard("_thread.start_new_thread", threading.Thread.start)  # type: ignore[method-assign]
    # Log handlers are not workflow code: a FileHandler may open its file lazily.
    logging.Handler.handle = _unguard(logging.Handler.handle)  # type: ignore[method-assign]


def _guard(event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded_call(*args: Any, **kwargs: Any) -> Any:
        if getattr(_state, "depth", 0):
            raise NonDeterministicCallError(*FORBIDDEN[event])
        return fn(*args, **kwargs)

    return guarded_call


def _unguard(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def unguarded_call(*args: Any, **kwargs: Any) -> Any:
        if not getattr(_state, "depth", 0):
            return fn(*args, **kwargs)
        with unguarded():
            return fn(*args, **kwargs)

    return unguarded_call


def _audit(event: str, args: tuple[Any, ...]) -> None:
    refused = FORBIDDEN.get(event)
    if refused is None or not getattr(_state, "depth", 0):
        return
    if event == "open" and _allowed_open(args):
        return
    raise NonDeterministicCallError(*refused)


def _allowed_open(args: tuple[Any, ...]) -> bool:
    path, mode, flags = args
    if isinstance(path, int):  # os.fdopen of a descriptor opened elsewhere
        return False
    name = os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)
    if name.endswith(_CODE_SUFFIXES) or _PYCACHE in name:  # also a .pyc's temporary file
        return True
    if isinstance(mode, str):  # open(); os.open() passes None and its flags
        reading = not set(mode) & set("wax+")
    else:
        reading = isinstance(flags, int) and not flags & _WRITE_FLAGS
    return reading and name.startswith(_READ_ONLY_DIRS)
