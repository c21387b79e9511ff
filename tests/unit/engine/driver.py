"""A test driver for the pure engine: plays the host (mailboxes, clock, store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether_operator.engine import (
    Deliver,
    Effect,
    Engine,
    EngineConfig,
    Persist,
    Run,
    RunEnded,
    WorkerGone,
)
from tether_types.commands import command_from_wire
from tether_types.notices import Notice


@dataclass
class Driver:
    engine: Engine = field(default_factory=lambda: Engine(EngineConfig()))
    now: float = 1000.0
    inbox: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stored: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    gone: list[tuple[str, str]] = field(default_factory=list)
    silent: set[str] = field(default_factory=set)
    """Workers that stop heartbeating; every other live worker heartbeats on each tick."""

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for fx in effects:
            if isinstance(fx, Deliver):
                self.inbox.setdefault(fx.worker_id, []).append(fx.message)
            elif isinstance(fx, Persist):
                self.stored.setdefault(fx.run_id, []).extend(fx.events)
            elif isinstance(fx, Notice):
                self.notices.append(fx)
            elif isinstance(fx, RunEnded):
                self.ended.append(fx.run_id)
            elif isinstance(fx, WorkerGone):
                self.gone.append((fx.worker_id, fx.reason))
        return effects

    # ---------------------------------------------------------------- actions

    def register(
        self,
        wid: str,
        *,
        node: str = "node-a",
        workflows: dict[str, str | None] | None = None,
        activities: tuple[str, ...] = ("a", "b", "load", "predict"),
        slots: int = 4,
        capacity: int = 2,
        incarnation: str = "1",
        pool: str = "",
        namespace: str = "",
    ) -> None:
        wf = workflows if workflows is not None else {"wf": None}
        self.apply(
            self.engine.register_worker(
                {
                    "worker_id": wid,
                    "pod": wid,
                    "node": node,
                    "pool": pool,
                    "namespace": namespace,
                    "incarnation": incarnation,
                    "workflows": [{"name": n, "sticky": s} for n, s in wf.items()],
                    "activities": [{"name": a} for a in activities],
                    "slots": slots,
                    "session_capacity": capacity,
                },
                self.now,
            )
        )

    def start(self, workflow: str = "wf", **kw: Any) -> str:
        run_id, fx = self.engine.start_run({"workflow": workflow, **kw}, self.now)
        self.apply(fx)
        return run_id

    def take(self, wid: str, kind: str | None = None) -> list[dict[str, Any]]:
        msgs = self.inbox.get(wid, [])
        keep = [m for m in msgs if kind is not None and m["kind"] != kind]
        got = [m for m in msgs if kind is None or m["kind"] == kind]
        self.inbox[wid] = keep
        return got

    def take_one(self, wid: str, kind: str) -> dict[str, Any]:
        got = self.take(wid, kind)
        assert len(got) == 1, f"expected one {kind} for {wid}, got {got}"
        return got[0]

    def workflow_task(self, wid: str) -> dict[str, Any]:
        return self.take_one(wid, "workflow")

    def commands(self, wid: str, wft: dict[str, Any], *cmds: dict[str, Any]) -> None:
        self.apply(
            self.engine.workflow_commands(
                wid, wft["run_id"], wft["task_id"], [command_from_wire(c) for c in cmds], self.now
            )
        )

    def complete(self, wid: str, task: dict[str, Any], result: Any = None) -> None:
        self.apply(self.engine.activity_completed(wid, task["task_id"], result, self.now))

    def fail(self, wid: str, task: dict[str, Any], type_: str = "ValueError", **kw: Any) -> None:
        self.apply(
            self.engine.activity_failed(
                wid, task["task_id"], {"type": type_, "message": "boom", **kw}, self.now
            )
        )

    def holds(self, wid: str, *task_ids: str) -> None:
        """A heartbeat of `wid` listing the tasks it holds."""
        self.apply(self.engine.worker_holds(wid, set(task_ids), self.now))

    def lose(self, wid: str, reason: str = "ProcessExited") -> None:
        self.apply(self.engine.worker_lost(wid, reason, "", self.now))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for wid, w in self.engine.workers.items():
            if w.alive and wid not in self.silent:
                self.engine.worker_seen(wid, self.now)
        self.apply(self.engine.advance(self.now))

    def run(self, run_id: str) -> Run:
        return self.engine.runs[run_id]

    def view(self, run_id: str) -> dict[str, Any]:
        return self.engine.run_view(run_id)


def act(seq: int, name: str = "a", session: str | None = None, **options: Any) -> dict[str, Any]:
    return {
        "type": "schedule_activity",
        "seq": seq,
        "activity": name,
        "args": [seq],
        "kwargs": {},
        "options": options,
        "session_id": session,
    }


def open_session(seq: int, sid: str, strategy: str = "SOFT") -> dict[str, Any]:
    return {"type": "open_session", "seq": seq, "session_id": sid, "strategy": strategy}


def done(seq: int, result: Any = None) -> dict[str, Any]:
    return {"type": "complete_workflow", "seq": seq, "result": result}
