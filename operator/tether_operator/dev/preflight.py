"""Import the workflow file once before any worker starts, so a broken file is one error.

The import runs in a child process with a worker's environment: the user's module
(and whatever it does when imported) never runs inside the dev supervisor, and the
import sees exactly what a worker will see. A syntax error, an exception raised at
import, or a file that defines nothing to run becomes a `DevError` with the
traceback of the user's own code, instead of workers crashing and restarting in a loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tether_operator.dev.embedded import DevError
from tether_operator.dev.workers import WorkerSpec

PREFLIGHT_TIMEOUT_SECONDS = 120.0
"""How long importing the workflow file may take (a model loaded at import counts)."""

RESULT_MARKER = "TETHER-PREFLIGHT "
"""Prefix of the child's one result line; anything the module prints itself is ignored."""

# The child: import the file as a worker does, then print one JSON result line.
# Frames of the loader and importlib are dropped from tracebacks: the user's own
# code (or, for a SyntaxError, the offending line) is what explains the failure.
_CHILD = """
import json, os, sys, traceback
import worker_runtime
from worker_runtime.loader import discover_all, load_module
from worker_runtime.workflow import get_definition

ours = os.path.dirname(worker_runtime.__file__)

def report(**result):
    sys.stdout.write("\\n" + MARKER + json.dumps(result) + "\\n")
    sys.stdout.flush()

try:
    module = load_module(sys.argv[1])
except BaseException as exc:
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not f.filename.startswith(("<frozen", "<string>", ours))]
    )
    report(error="".join(te.format()).rstrip())
else:
    workflows, activities = discover_all(module)
    report(
        workflows=[get_definition(w).name for w in workflows],
        activities=[a.name for a in activities],
    )
"""


@dataclass(frozen=True)
class FileContents:
    """What the workflow file registers: workflow names and activity names."""

    workflows: list[str]
    activities: list[str]

    def summary(self) -> str:
        """`workflows: a, b; activities: x, y` for the dev header."""
        parts = []
        if self.workflows:
            parts.append(f"workflows: {', '.join(self.workflows)}")
        if self.activities:
            parts.append(f"activities: {', '.join(self.activities)}")
        return "; ".join(parts)


def check_file(spec: WorkerSpec, shown_as: str) -> FileContents:
    """Import the worker's file once in a child process; raise `DevError` if it is unusable.

    `shown_as` is how the user named the file (the path in error messages).
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", f"MARKER = {RESULT_MARKER!r}\n{_CHILD}", str(spec.file)],
            env=spec.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PREFLIGHT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DevError(
            f"importing {shown_as} took longer than {PREFLIGHT_TIMEOUT_SECONDS:g}s; "
            "no worker was started (does it wait for something at import time?)"
        ) from None
    result = _result(done.stdout)
    if result is None:
        output = (done.stderr or done.stdout).strip()
        raise DevError(
            f"importing {shown_as} stopped the Python process (exit code {done.returncode}); "
            "no worker was started" + (f":\n{output}" if output else "")
        )
    if "error" in result:
        raise DevError(
            f"{shown_as} failed to import; no worker was started. Fix it and run "
            f"`tether dev` again:\n{result['error']}"
        )
    contents = FileContents(
        workflows=[str(name) for name in result.get("workflows", ())],
        activities=[str(name) for name in result.get("activities", ())],
    )
    if not contents.workflows and not contents.activities:
        raise DevError(
            f"{shown_as} defines no workflows or activities; no worker was started. "
            "Decorate a class with @workflows.workflow.define and its entrypoint with "
            "@workflows.workflow.entrypoint, or a function with @workflows.activity "
            "(`import worker_runtime as workflows`), at the top level of the file"
        )
    return contents


def _result(stdout: str) -> dict[str, Any] | None:
    """The child's result line, if it got as far as printing one."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            parsed: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return parsed
    return None
