"""Which operator pod leads, and how a test kills it (the chart runs two replicas)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.e2e.conftest import Install
from tests.e2e.kube import Obj, eventually, running_and_ready

LEADER = "tether.dev/leader=true"


def leader(tether: Install, not_: str = "") -> Obj | None:
    """The Ready operator pod carrying the leader label (other than ``not_``)."""
    selector = f"app.kubernetes.io/instance={tether.release},{LEADER}"
    found = [
        p
        for p in tether.system.pods(selector)
        if running_and_ready(p) and p["metadata"]["name"] != not_
    ]
    return found[0] if len(found) == 1 else None


def crash(pod: Obj) -> None:
    """SIGKILL the operator process of ``pod`` (kind's pods are processes of this host,
    in containers of the node containers; the one to kill is in the cgroup named after
    the pod's uid)."""
    uid = pod["metadata"]["uid"]
    marks = (uid, uid.replace("-", "_"))
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup = (proc / "cgroup").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(m in cgroup for m in marks) and b"operator" in argv and len(argv) > 2:
            os.kill(int(proc.name), signal.SIGKILL)
            return
    raise AssertionError(f"no operator process in the cgroup of pod {pod['metadata']['name']}")


def holder(tether: Install) -> str:
    """The Lease's holder identity (`<pod>_<uuid>`), "" when none."""
    return str(tether.system.get("lease", tether.release)["spec"].get("holderIdentity") or "")


def await_new_leader(tether: Install, was: str, timeout: float = 120) -> Obj:
    """Wait until a pod other than holder ``was`` holds the Lease and is labelled leader."""

    def new_leader() -> Obj | None:
        now = holder(tether)
        pod = leader(tether)
        return pod if now != was and pod and now.startswith(f"{pod['metadata']['name']}_") else None

    found: Obj = eventually(new_leader, timeout=timeout, interval=0.2, what="a new leader")
    return found
