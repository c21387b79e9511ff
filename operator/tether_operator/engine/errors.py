"""Errors for bad input from clients and workers; each names the object or field."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: `reason` is a CamelCase word, `field` the offending field if any."""

    reason = "EngineError"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class RunNotFound(EngineError):
    reason = "RunNotFound"


class RunAlreadyExists(EngineError):
    reason = "RunAlreadyExists"


class UnknownWorker(EngineError):
    """The worker is not registered (or was declared lost): it must register again."""

    reason = "UnknownWorker"


class WorkerReplaced(EngineError):
    """A newer process registered under this worker's id: this one must stop."""

    reason = "WorkerReplaced"


class WorkerRetired(EngineError):
    """The worker's pod is gone for good (PodDeleted, Evicted, ScaledDown): a process
    still running in it may not register again, so it takes no new work."""

    reason = "WorkerRetired"


class WorkerIdTaken(EngineError):
    """Another namespace's worker holds the id (alive, or with sessions waiting for it):
    a worker never takes over what another namespace's worker ran."""

    reason = "WorkerIdTaken"


class WorkflowNotFound(EngineError):
    """No worker has ever registered the workflow a run asks for."""

    reason = "WorkflowNotFound"


class InvalidCommand(EngineError):
    reason = "InvalidCommand"
