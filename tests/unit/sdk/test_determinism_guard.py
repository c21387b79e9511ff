"""Blocking and I/O calls in workflow code raise NonDeterministicCallError, saying what
to use instead; the same calls stay allowed everywhere else."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import worker_runtime as workflows
from worker_runtime import NonDeterministicCallError, run_activities_locally, workflow
from worker_runtime.workflow_instance import WorkflowInstance

from .fakes import settle, workflow_task


def _thread() -> None:
    threading.Thread(target=lambda: None).start()


async def _executor() -> None:
    await asyncio.get_running_loop().run_in_executor(None, print)


async def _to_thread() -> None:
    await asyncio.to_thread(print)


async def _open_connection() -> None:
    await asyncio.open_connection("localhost", 80)


async def _subprocess_exec() -> None:
    await asyncio.create_subprocess_exec("true")


FORBIDDEN: dict[str, tuple[Callable[[], Any], str, str]] = {
    "time.sleep": (lambda: time.sleep(0.01), "time.sleep()", "await workflow.sleep"),
    "open-read": (lambda: Path(os.devnull).read_text(), "open()", "activity"),
    "open-write": (lambda: Path(os.devnull).write_text("x"), "open()", "activity"),
    "os.open": (lambda: os.open(os.devnull, os.O_RDONLY), "open()", "activity"),
    "socket": (lambda: socket.socket(), "socket.socket()", "activity"),
    "getaddrinfo": (lambda: socket.getaddrinfo("localhost", 80), "getaddrinfo", "activity"),
    "subprocess": (lambda: subprocess.run(["true"], check=False), "subprocess.Popen()", "activity"),
    "os.system": (lambda: os.system("true"), "os.system()", "activity"),
    "thread": (_thread, "starting a thread", "asyncio tasks"),
    "run_in_executor": (_executor, "loop.run_in_executor()", "activity"),
    "to_thread": (_to_thread, "asyncio.to_thread()", "activity"),
    "open_connection": (_open_connection, "asyncio.open_connection()", "activity"),
    "subprocess_exec": (_subprocess_exec, "asyncio.create_subprocess_exec()", "activity"),
    "input": (input, "input()", "activity"),
}


@workflow.define(name="forbidden")
class Forbidden:
    @workflow.entrypoint
    async def run(self, name: str) -> Any:
        outcome = FORBIDDEN[name][0]()
        if asyncio.iscoroutine(outcome):
            await outcome
        return "not refused"


@workflow.define(name="catches")
class Catches:
    @workflow.entrypoint
    async def run(self) -> str:
        try:
            time.sleep(1)  # noqa: ASYNC251 - the point of the test
        except NonDeterministicCallError as exc:
            await workflow.sleep(1)
            return exc.call
        return "not refused"


def run(cls: type[Any], input: Any = None) -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = []
    task = workflow_task(workflow.get_definition(cls).name, input)
    WorkflowInstance(task, workflow.get_definition(cls), lambda _i, c: commands.append(c)).start()
    return commands


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
async def test_a_forbidden_call_fails_the_run_naming_the_call_and_what_to_use(name: str) -> None:
    _, call, advice = FORBIDDEN[name]
    commands = run(Forbidden, name)
    await settle()
    (command,) = commands
    assert command["type"] == "fail_workflow", command
    error = command["error"]
    assert error["type"] == "NonDeterministicCallError"
    assert error["reason"] == "NonDeterministicCall"
    assert call in error["message"]
    assert "in workflow code" in error["message"]
    assert advice in error["message"]


async def test_the_error_names_the_replacement_and_can_be_caught() -> None:
    with pytest.raises(NonDeterministicCallError) as info:
        raise NonDeterministicCallError("time.sleep()", "blocks: use x instead")
    assert str(info.value) == "time.sleep() in workflow code blocks: use x instead"
    commands = run(Catches)
    assert commands == [{"type": "start_timer", "seq": 1, "seconds": 1.0}]


@workflow.define(name="allowed")
class Allowed:
    @workflow.entrypoint
    async def run(self) -> list[Any]:
        module = importlib.import_module("tether_lazily_imported")
        zone = zoneinfo.ZoneInfo.no_cache("Europe/Paris")
        try:
            raise ValueError("traceback lines are read from .py files")
        except ValueError as exc:
            import traceback

            lines = traceback.format_exception(exc)
        return [module.VALUE, str(zone), "raise ValueError" in "".join(lines)]


async def test_imports_time_zones_and_tracebacks_stay_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tether_lazily_imported.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tether_lazily_imported", raising=False)
    commands = run(Allowed)
    assert commands == [
        {"type": "complete_workflow", "seq": 1, "result": [42, "Europe/Paris", True]}
    ]
    if not sys.dont_write_bytecode:  # the import also wrote its .pyc
        assert list((tmp_path / "__pycache__").glob("tether_lazily_imported.*.pyc"))


@workflow.define(name="logs")
class Logs:
    @workflow.entrypoint
    async def run(self, message: str) -> None:
        logging.getLogger("tether-test-workflow-log").warning(message)


async def test_log_handlers_may_open_their_files_from_workflow_code(tmp_path: Path) -> None:
    handler = logging.FileHandler(tmp_path / "workflow.log", delay=True)  # opens on first use
    logger = logging.getLogger("tether-test-workflow-log")
    logger.addHandler(handler)
    try:
        commands = run(Logs, "logged from workflow code")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert commands == [{"type": "complete_workflow", "seq": 1, "result": None}]
    assert (tmp_path / "workflow.log").read_text() == "logged from workflow code\n"


@workflows.activity()
def blocking_activity(path: str) -> str:
    time.sleep(0.001)
    with open(path) as f:
        return f.read()


@workflow.define(name="local-io")
class LocalIo:
    @workflow.entrypoint
    async def run(self, path: str) -> str:
        with run_activities_locally():
            return await blocking_activity(path)


async def test_activities_and_code_outside_workflows_may_block_and_do_io(tmp_path: Path) -> None:
    target = tmp_path / "data.txt"
    target.write_text("from a file")
    commands = run(LocalIo, str(target))
    for _ in range(100):
        await settle()
        if commands and commands[-1]["type"] == "complete_workflow":
            break
        await asyncio.sleep(0.01)
    assert commands[-1] == {"type": "complete_workflow", "seq": 2, "result": "from a file"}
    # The guard is installed, and inactive outside workflow code.
    time.sleep(0)  # noqa: ASYNC251 - the point of the test
    done = threading.Event()
    threading.Thread(target=done.set).start()
    assert done.wait(1)
    assert target.read_text() == "from a file"
