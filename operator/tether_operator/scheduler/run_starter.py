"""The seam where a host starts the runs clients ask for, and finds runs the engine
does not hold. On Kubernetes the operator plugs in its WorkflowRun starter; without
one, the scheduler starts runs in its own engine."""

from __future__ import annotations

from typing import Protocol

from tether_types.views import RunViewData
from worker_runtime.protocol import StartRunRequest


class RunNotStarted(Exception):
    """The run was made but did not start in time (the HTTP API answers 504)."""


class RunStarter(Protocol):
    """Where `POST /v1/runs` goes, and where a run the engine does not hold is found
    (waiting for its workflow, refused, or finished and forgotten)."""

    async def start(self, req: StartRunRequest) -> RunViewData:
        """Start the run `req` asks for; its view once it started and its first history
        is stored. Raises an `EngineError` naming the field, or `RunNotStarted`."""
        ...

    async def view(self, run_id: str) -> RunViewData | None:
        """The view of run `run_id` held outside the engine; None if there is none."""
        ...

    async def views(self) -> list[RunViewData]:
        """Every run held outside the engine, as views."""
        ...
