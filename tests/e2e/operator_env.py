"""The operator as a host process, and host worker processes, for operator e2e tests.

`tether operator` runs out of cluster (KUBECONFIG) watching only the test's own
namespace; workers are `python -m worker_runtime FILE` processes pointed at it,
reporting that namespace as theirs. Pods are the Helm e2e tests' business.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.kube import API_VERSION, PREFIX, Kube, KubectlError, Obj, eventually

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(__file__).parent / "testdata"
"""Namespaces the operator tests create start with this (a shared cluster: pick yours)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Operator:
    """`tether operator` watching one namespace, on a free port."""

    kube: Kube
    namespace: str
    logs: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    args: list[str] = field(default_factory=list)
    """More `tether operator` arguments (e.g. `--store postgres`)."""
    env: dict[str, str] = field(default_factory=dict)
    """More environment (e.g. TETHER_STORE_DSN)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True) -> None:
        """Start the process; wait for its /readyz unless not `ready`."""
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": self.kube.kubeconfig, **self.env}
        with (self.logs / f"operator-{self.starts}.log").open("wb") as out:
            self.process = self._spawn(out, env)
        if ready:
            eventually(self._ready, timeout=60, interval=0.2, what="the operator's /readyz")

    def _spawn(self, out: Any, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether_operator.cli",
                "operator",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                # Several host operators may run at once: no shared metrics port.
                "--metrics-port",
                "0",
                "--namespace",
                self.namespace,
                "--scheduler-url",
                self.url,
                # Host workers have no pod tokens; the Helm e2e tests run with auth on.
                "--auth",
                "none",
                *self.args,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited: {self.log()[-3000:]}")
        try:
            return http_get(f"{self.url}/readyz")[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("op*.log")))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait for the exit; the exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(f"{self.url}{path}")


@dataclass
class Workers:
    """Host worker processes registered with the operator."""

    operator: Operator
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, file: str | Path, name: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"worker-{name}.log").open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker_runtime", str(file)],
                env={
                    **os.environ,
                    "TETHER_SCHEDULER_URL": self.operator.url,
                    "TETHER_WORKER_ID": name,
                    "TETHER_POD_NAMESPACE": self.operator.namespace,
                    "TETHER_LOG_LEVEL": "INFO",
                    **env,
                },
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def workflow_run(name: str, workflow: str, input_: Any = None, **spec: Any) -> Obj:
    body: dict[str, Any] = {"workflowRef": {"name": workflow}, **spec}
    if input_ is not None:
        body["input"] = input_
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": body,
    }


def condition(obj: Obj, type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def wait_for(ns: Kube, name: str, cond: str = "Succeeded", timeout: int = 120) -> Obj:
    """`kubectl wait --for=condition=...` as a user runs it, then the object."""
    ns.run(
        "wait",
        f"--for=condition={cond}",
        f"wfr/{name}",
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )
    return ns.get("wfr", name)


def events_of(ns: Kube, name: str) -> list[str]:
    """Reasons of the Events on WorkflowRun `name`."""
    items = ns.list("events")
    return [
        e["reason"]
        for e in items
        if e["involvedObject"].get("kind") == "WorkflowRun" and e["involvedObject"]["name"] == name
    ]


@dataclass
class OperatorEnv:
    """One namespace, an operator watching it, and workers to start."""

    ns: Kube
    operator: Operator
    workers: Workers


@contextmanager
def operator_env(
    kube: Kube, tmp_path: Path, args: list[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[OperatorEnv]:
    """A fresh namespace with an operator watching it (started with `args` and `env`
    added); everything stopped on exit."""
    name = f"{PREFIX}-op-{uuid.uuid4().hex[:8]}"
    with kube.scratch_namespace(name) as ns:
        operator = Operator(kube, name, tmp_path, args=args or [], env=env or {})
        workers = Workers(operator, tmp_path)
        operator.start()
        try:
            yield OperatorEnv(ns, operator, workers)
        finally:
            workers.stop_all()
            if operator.process is not None:
                operator.stop()
            if os.environ.get("TETHER_E2E_KEEP_LOGS"):
                print(operator.log())


def run_across_an_operator_kill(
    env: OperatorEnv, ledger: Path, name: str, workflow: str, input_: Any, kills: int = 1
) -> tuple[Obj, list[int]]:
    """Run WorkflowRun `name` on a worker of `operator_workflows.py` that writes each step
    it executes to `ledger`; SIGKILL the operator every three steps, `kills` times,
    starting it again each time. The run once Succeeded, and the steps executed, in order."""
    ledger.touch()
    env.workers.start(
        TESTDATA / "operator_workflows.py", "worker-a", TETHER_TEST_LEDGER=str(ledger)
    )
    env.ns.apply(workflow_run(name, workflow, input_))
    for kill in range(1, kills + 1):
        eventually(
            lambda k=kill: len(ledger.read_text().split()) >= 3 * k,  # type: ignore[misc]
            what=f"{3 * kill} steps done",
        )
        assert env.operator.stop(signal.SIGKILL) == -signal.SIGKILL
        time.sleep(1)
        env.operator.start()
    try:
        run = wait_for(env.ns, name, timeout=75)  # inside the test's own 120 s limit
    except KubectlError:
        tail = "\n".join(env.operator.log().splitlines()[-60:])
        raise AssertionError(
            f"wfr/{name} did not succeed after {kills} operator kill(s); steps run: "
            f"{ledger.read_text().split()}\n{env.ns.run_post_mortem(name)}\n"
            f"operator log (last 60 lines):\n{tail}"
        ) from None
    return run, [int(line) for line in ledger.read_text().split()]


def eventually_phase(ns: Kube, name: str, phase: str, timeout: float = 60) -> Obj:
    def check() -> Obj | None:
        obj = ns.get("wfr", name)
        return obj if (obj.get("status") or {}).get("phase") == phase else None

    return eventually(check, timeout=timeout, what=f"wfr/{name} phase {phase}")  # type: ignore[no-any-return]
