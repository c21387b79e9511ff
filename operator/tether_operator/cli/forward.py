"""`tether --server kube`: reach the leading operator through the kubeconfig, from anywhere
kubectl works, and follow it across leader changes.

The CLI runs `kubectl port-forward` to the pod that carries `tether.dev/leader=true` in
the operator's namespace (`--operator-namespace`, `$TETHER_OPERATOR_NAMESPACE`, default
`tether-system`), as kubectl plugins do. When a call cannot connect, or a standby answers
it (503: the leader changed), the forward is started again to whichever pod leads now
and the call is sent again, for up to `FOLLOW_SECONDS`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from tether_operator.cli.client import CliError

__all__ = ["FOLLOW_SECONDS", "KUBE_SERVER", "LeaderForward"]

KUBE_SERVER = "kube"
"""The `--server` value that means: the leading operator, through the kubeconfig."""
FOLLOW_SECONDS = 60.0
"""How long a call keeps looking for a leader (a failover takes about 17 s)."""
SCHEDULER_PORT = 7233
_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


@dataclass
class LeaderForward:
    """A `kubectl port-forward` to the leading operator pod, started again on demand."""

    namespace: str = "tether-system"
    kubectl: str = field(default_factory=lambda: shutil.which("kubectl") or "kubectl")
    local_port: int | None = None
    """The local port to listen on (None: any free one)."""
    _process: subprocess.Popen[str] | None = None

    def url(self) -> str:
        """A local URL reaching the pod that leads now (a new forward)."""
        self.close()
        deadline = time.monotonic() + FOLLOW_SECONDS
        pod = self._leader(deadline)
        local = "" if self.local_port is None else str(self.local_port)
        command = [self.kubectl, "-n", self.namespace, "port-forward", f"pod/{pod}",
                   f"{local}:{SCHEDULER_PORT}"]  # fmt: skip
        try:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as exc:
            raise CliError(f"--server {KUBE_SERVER} needs kubectl: {exc}") from None
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline()
        found = _FORWARDING.search(line)
        if found is None:
            self.close()
            raise CliError(f"kubectl port-forward to pod {pod} failed: {line.strip()}")
        return f"http://127.0.0.1:{found.group(1)}"

    def forwarding(self) -> bool:
        """Whether the forward's kubectl still runs (it ends when its pod goes)."""
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def _leader(self, deadline: float) -> str:
        """The name of the Ready pod labelled leader; waits for one until `deadline`."""
        command = [
            self.kubectl, "-n", self.namespace, "get", "pods", "-l", "tether.dev/leader=true",
            "-o", "jsonpath={range .items[?(@.status.phase=='Running')]}{.metadata.name}"
            "{' '}{.metadata.deletionTimestamp}{'\\n'}{end}",
        ]  # fmt: skip
        while True:
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise CliError(f"--server {KUBE_SERVER} needs kubectl: {exc}") from None
            if done.returncode != 0:
                raise CliError(f"kubectl could not list the operator's pods: {done.stderr.strip()}")
            live = [line.split()[0] for line in done.stdout.splitlines() if len(line.split()) == 1]
            if live:
                return live[0]
            if time.monotonic() > deadline:
                raise CliError(
                    f"no operator pod leads in namespace {self.namespace} (label "
                    "tether.dev/leader=true): is Tether installed there? "
                    "(--operator-namespace names another)"
                )
            time.sleep(1.0)
