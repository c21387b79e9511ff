"""`/v1/schedules`: list schedules, trigger one, suspend and resume it (the console's
buttons and `tether schedule`), through the service's `ScheduleBook`.

The same RBAC as kubectl's applies: listing needs `list` on workflowschedules in the
namespace; suspend and resume `patch` on workflowschedules; a trigger `patch` on
workflowschedules and `create` on workflowruns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request

from tether_operator.scheduler.problems import problem
from tether_operator.scheduler.schedules import ScheduleBook, ScheduleError
from tether_operator.scheduler.service import SchedulerService
from worker_runtime.protocol import API_PREFIX, Problem, ScheduleList, ScheduleView, TriggeredRun

__all__ = ["add_schedule_routes"]

Allow = Callable[[Request, str, str, str | None], Awaitable[None]]
Visible = Callable[[Request, str, list[Any], Callable[[Any], str]], Awaitable[list[Any]]]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such schedule (named in the message)"},
    403: {"model": Problem, "description": "RBAC does not allow it (the message says what)"},
}
Namespace = Annotated[str, Path(min_length=1, max_length=63, description="Its namespace.")]
Name = Annotated[str, Path(min_length=1, max_length=253, description="Its name.")]


def add_schedule_routes(
    app: FastAPI, service: SchedulerService, allow: Allow, visible: Visible
) -> None:
    """Add the schedule routes to `app` (`allow` and `visible` apply the caller's RBAC)."""

    def book() -> ScheduleBook:
        if service.schedules is None:
            raise ScheduleError("this scheduler runs no schedules")
        return service.schedules

    @app.exception_handler(ScheduleError)
    async def _missing(_request: Request, exc: ScheduleError) -> Any:
        return problem(404, "ScheduleNotFound", str(exc))

    @app.get(
        f"{API_PREFIX}/schedules",
        response_model=ScheduleList,
        tags=["schedules"],
        summary="Every schedule the caller may list",
    )
    async def list_schedules(
        request: Request,
        namespace: Annotated[str | None, Query(description="Only this namespace's.")] = None,
    ) -> dict[str, Any]:
        found = service.schedules.views() if service.schedules is not None else []
        found = [s for s in found if namespace is None or s.namespace == namespace]
        shown = await visible(request, "workflowschedules", found, lambda s: s.namespace)
        return {"schedules": [s.model_dump() for s in shown]}

    @app.post(
        f"{API_PREFIX}/schedules/{{namespace}}/{{name}}/trigger",
        response_model=TriggeredRun,
        responses=_NOT_FOUND,
        tags=["schedules"],
        summary="Start one run of the schedule now, whatever its policy",
    )
    async def trigger(request: Request, namespace: Namespace, name: Name) -> TriggeredRun:
        await allow(request, "patch", "workflowschedules", namespace)
        await allow(request, "create", "workflowruns", namespace)
        return await book().trigger(namespace, name)

    def setter(suspend: bool) -> Callable[..., Awaitable[ScheduleView]]:
        async def change(request: Request, namespace: Namespace, name: Name) -> ScheduleView:
            await allow(request, "patch", "workflowschedules", namespace)
            return await book().set_suspend(namespace, name, suspend)

        return change

    for verb, suspend in (("suspend", True), ("resume", False)):
        app.add_api_route(
            f"{API_PREFIX}/schedules/{{namespace}}/{{name}}/{verb}",
            setter(suspend),
            methods=["POST"],
            response_model=ScheduleView,
            responses=_NOT_FOUND,
            tags=["schedules"],
            summary=f"{verb.capitalize()} the schedule (its spec.suspend)",
        )
