"""Running workflow tasks: one `WorkflowInstance` per run, fed its resolutions.

The runner knows nothing of reports or activities: every command an instance emits
goes to the callback it was built with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from .failures import workflow_not_registered
from .protocol import Resolution, WorkflowTask
from .workflow import WorkflowDefinition
from .workflow_instance import Outcome, WorkflowInstance

log = logging.getLogger("worker_runtime.worker")

OnCommand = Callable[[str, str, dict[str, Any]], None]
"""Called with (run_id, workflow_task_id, command) for each command, in order."""


class WorkflowRunner:
    """Runs the workflow tasks the worker receives, one live instance per run."""

    def __init__(
        self,
        workflows: dict[str, WorkflowDefinition],
        *,
        worker_id: str,
        pod: str,
        node: str,
        on_command: OnCommand,
    ) -> None:
        self._workflows = workflows
        self._worker_id, self._pod, self._node = worker_id, pod, node
        self._on_command = on_command
        self._instances: dict[str, WorkflowInstance] = {}

    def task_ids(self) -> Iterator[str]:
        """Workflow task ids of the live instances."""
        return (instance.task_id for instance in self._instances.values())

    def outcomes_received(self) -> dict[str, int]:
        """How many resolutions each live instance received, by workflow task id."""
        return {i.task_id: i.outcomes_received for i in self._instances.values()}

    def start(self, task: WorkflowTask) -> None:
        """Start the run's instance for `task`, replacing (cancelling) an older one.

        A workflow this worker did not register fails the run with ``WorkflowNotFound``.
        """
        old = self._instances.pop(task.run_id, None)
        if old is not None:
            old.cancel()
        definition = self._workflows.get(task.workflow)
        if definition is None:
            error = workflow_not_registered(task.workflow, self._worker_id)
            self._on_command(
                task.run_id,
                task.task_id,
                {"type": "fail_workflow", "seq": 1, "error": error.model_dump()},
            )
            return
        instance = WorkflowInstance(
            task,
            definition,
            self._emit,
            worker_id=self._worker_id,
            pod=self._pod,
            node=self._node,
            on_done=self._instance_done,
        )
        self._instances[task.run_id] = instance
        instance.start()

    def resolve(self, resolution: Resolution) -> None:
        """Hand a command's outcome to the run's live instance (dropped if there is none)."""
        instance = self._instances.get(resolution.run_id)
        if instance is not None:
            instance.resolve(
                resolution.seq,
                Outcome(
                    resolution.ok,
                    resolution.result,
                    resolution.error,
                    resolution.attempts,
                    resolution.time,
                ),
                resolution.workflow_task_id,
            )

    def cancel(self, task_id: str, reason: str) -> bool:
        """Stop the instance running workflow task `task_id`; False if there is none."""
        for run_id, instance in list(self._instances.items()):
            if instance.task_id == task_id:
                log.info("workflow task %s of run %s cancelled: %s", task_id, run_id, reason)
                instance.cancel()
                del self._instances[run_id]
                return True
        return False

    def cancel_all(self) -> None:
        """Stop every instance; none sends another command."""
        for instance in list(self._instances.values()):
            instance.cancel()
        self._instances.clear()

    def _emit(self, instance: WorkflowInstance, command: dict[str, Any]) -> None:
        self._on_command(instance.run_id, instance.task_id, command)

    def _instance_done(self, instance: WorkflowInstance) -> None:
        if self._instances.get(instance.run_id) is instance:
            del self._instances[instance.run_id]
