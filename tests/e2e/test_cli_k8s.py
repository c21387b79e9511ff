"""The CLI against the chart's operator with `--server kube` (issue 15): it reaches the
leader through the kubeconfig (a kubectl port-forward it manages) and follows it when
the leader pod is deleted mid-call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import Install
from tests.e2e.kube import Kube, eventually
from tests.e2e.leadership import leader
from tests.e2e.scenario import serve, steps

pytestmark = pytest.mark.timeout(600)

POOL = "cli-steps"


def cli(kube: Kube, ns: Kube, token: str, *args: str) -> subprocess.Popen[str]:
    """`tether --server kube -n NS ARGS` as a user runs it, with a ServiceAccount token."""
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig, "TETHER_TOKEN": token}
    env.pop("TETHER_SERVER", None)
    command = [sys.executable, "-m", "tether_operator.cli", "--server", "kube",
               "-n", str(ns.namespace), *args]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def test_the_cli_reaches_the_leader_through_the_kubeconfig_and_follows_it(
    tether: Install, kube: Kube
) -> None:
    ns = tether.workloads["runs"]
    pool = serve(ns, POOL, "sticky_steps.py").ready(1)
    ns.run("create", "serviceaccount", "cli")
    ns.run("create", "role", "cli", "--verb=create,get,list,delete",
           "--resource=workflowruns.tether.dev")  # fmt: skip
    ns.run("create", "rolebinding", "cli", "--role=cli", f"--serviceaccount={ns.namespace}:cli")
    token = ns.run("create", "token", "cli", "--audience", "tether.dev/scheduler").strip()

    listed = cli(kube, ns, token, "get", "runs")
    out, err = listed.communicate(timeout=60)
    assert listed.returncode == 0, err

    run = steps(ns, POOL, count=40, seconds=0.5, sticky=False)
    waiting = cli(kube, ns, token, "wait", "run", run.name, "--timeout", "240")
    eventually(lambda: run.done >= 3, timeout=60, what="the run under way")
    pod = eventually(lambda: leader(tether), timeout=60, what="the leader")
    tether.system.run("delete", "pod", pod["metadata"]["name"], "--wait=false")
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, f"{out}\n{err}"
    assert "Succeeded" in out, out
    # The WorkflowRun's status is written after the run ends, and a new leader first
    # rebuilds its runs: kubectl catches up with what `wait` said, shortly after.
    run.reaches("Succeeded", timeout=30)
    pool.remove()
