"""Sticky worker sessions and local-activity scopes, as used from workflow code."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from .context import current_session, current_workflow, local_activities


class StickyStrategy(enum.StrEnum):
    """How a sticky session reacts when its worker is lost.

    SOFT rebinds to another worker (same node preferred); HARD waits for the same pod
    until the run's schedule timeout, then fails with reason ``SessionBroken``.
    """

    SOFT = "SOFT"
    HARD = "HARD"


@dataclass(frozen=True)
class StickySession:
    """A sticky session of the current run: its deterministic id and strategy."""

    id: str
    strategy: StickyStrategy = StickyStrategy.SOFT


async def get_sticky_worker_session(
    strategy: StickyStrategy = StickyStrategy.SOFT,
) -> StickySession:
    """Open a session and return it, to reuse in several ``run_sticky_worker_session`` scopes.

    A session opened this way is not closed by those scopes; it ends with the run.
    """
    instance = current_workflow.get()
    if instance is None:
        return StickySession("local", StickyStrategy(strategy))
    return StickySession(instance.open_session(StickyStrategy(strategy)), StickyStrategy(strategy))


@asynccontextmanager
async def run_sticky_worker_session(
    session: StickySession | None = None,
    strategy: StickyStrategy = StickyStrategy.SOFT,
) -> AsyncIterator[StickySession]:
    """Route every activity called in this scope to one worker.

    With no ``session``, opens a new one (id ``"{run_id}/s{seq}"``) and closes it on exit;
    with a session from ``get_sticky_worker_session()``, reuses it and leaves it open.
    Outside a workflow (plain scripts, unit tests) the scope does nothing.
    """
    instance = current_workflow.get()
    owned = session is None
    if session is None:
        strategy = StickyStrategy(strategy)
        if instance is None:
            session = StickySession("local", strategy)
        else:
            session = StickySession(instance.open_session(strategy), strategy)
    token = current_session.set(session.id)
    try:
        yield session
    finally:
        current_session.reset(token)
        if owned and instance is not None:
            instance.close_session(session.id)


@contextmanager
def run_activities_locally() -> Iterator[None]:
    """Run activities called in this scope in the workflow's own process (local activities).

    They keep their retry policy and start-to-close timeout; their results are recorded
    in history so a replay does not run them again.
    """
    token = local_activities.set(True)
    try:
        yield
    finally:
        local_activities.reset(token)
