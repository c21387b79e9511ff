"""A small kubectl-backed client for e2e tests: apply, get, wait, and read pods.

Tests talk to the cluster the way a user does, through kubectl and YAML, so what
they exercise is the apiserver's real behaviour (admission, schemas, RBAC), not a
client library's model of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

API_VERSION = "tether.dev/v1alpha1"
"""The group and version of Tether's resources, as DESIGN.md names them."""

PREFIX = os.environ.get("TETHER_E2E_PREFIX", "e2e")
"""The first word of every namespace the e2e tests make (`TETHER_E2E_PREFIX`)."""


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


@dataclass
class Kube:
    """kubectl bound to one kubeconfig and (optionally) one namespace."""

    kubeconfig: str
    kubectl: str = "kubectl"
    namespace: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def in_namespace(self, namespace: str) -> Kube:
        return Kube(self.kubeconfig, self.kubectl, namespace, self.env)

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        command = [self.kubectl, "--kubeconfig", self.kubeconfig]
        if self.namespace is not None:
            command += ["--namespace", self.namespace]
        done = subprocess.run(
            [*command, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, *objects: Obj | str) -> None:
        """Apply objects given as dicts or YAML text. Dicts go as JSON: kubectl's YAML
        would read a key like `n` or `y` as a boolean."""
        docs = [o if isinstance(o, str) else json.dumps(o) for o in objects]
        self.run("apply", "-f", "-", stdin="\n---\n".join(docs))

    def get(self, kind: str, name: str) -> Obj:
        return json.loads(self.run("get", kind, name, "-o", "json"))  # type: ignore[no-any-return]

    def list(self, kind: str, selector: str | None = None) -> list[Obj]:
        args = ["get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        return json.loads(self.run(*args))["items"]  # type: ignore[no-any-return]

    def delete(self, kind: str, name: str, *flags: str) -> None:
        self.run("delete", kind, name, "--ignore-not-found", *flags)

    def create(self, text: str) -> str:
        """Create the one object in YAML ``text`` (``generateName`` works); its name."""
        created = self.run("create", "-f", "-", "-o", "name", stdin=text).strip()
        return created.rpartition("/")[2]

    def jsonpath(self, kind: str, name: str, path: str) -> str:
        return self.run("get", kind, name, "-o", f"jsonpath={path}")

    def wait(self, kind: str, name: str, condition: str, timeout: float = 120) -> None:
        """``kubectl wait --for=condition=CONDITION``; on timeout, fail with the object's
        status and events, which say why."""
        try:
            self.run(
                "wait",
                f"--for=condition={condition}",
                f"{kind}/{name}",
                f"--timeout={timeout:.0f}s",
                timeout=timeout + 30,
            )
        except (KubectlError, subprocess.TimeoutExpired) as exc:
            detail = self.run("describe", kind, name) if self.exists(kind, name) else "(gone)"
            raise AssertionError(f"{kind}/{name} is not {condition}: {exc}\n{detail}") from exc

    def run_post_mortem(self, run: str, events: int = 12) -> str:
        """What a stuck WorkflowRun shows: `kubectl describe` and the last `events`
        events of its stored history (the history ConfigMaps `<run>-h<N>`)."""
        if not self.exists("wfr", run):
            return f"workflowrun {run} is gone"
        segments = sorted(
            (
                cm
                for cm in self.list("configmaps", "tether.dev/part=history")
                if cm["metadata"]["name"].rpartition("-h")[0] == run
            ),
            key=lambda cm: int(cm["metadata"]["name"].rpartition("-h")[2]),
        )
        history: list[Any] = []
        for cm in segments:
            data = cm.get("data") or {}
            for key in sorted(data, key=int):
                history[int(key) :] = json.loads(data[key])
        tail = "\n".join(json.dumps(e, sort_keys=True)[:300] for e in history[-events:])
        return f"{self.run('describe', 'wfr', run)}\nlast {events} history events:\n{tail}"

    def exists(self, kind: str, name: str) -> bool:
        return bool(self.run("get", kind, name, "--ignore-not-found", "-o", "name").strip())

    def pods(self, selector: str) -> list[Obj]:
        """Pods matching ``selector`` that are not being deleted."""
        return [p for p in self.list("pods", selector) if "deletionTimestamp" not in p["metadata"]]

    def logs(self, pod: str) -> str:
        return self.run("logs", pod)

    @contextmanager
    def scratch_namespace(self, name: str) -> Iterator[Kube]:
        """Create namespace ``name``, wait for its default ServiceAccount, and delete
        it (without waiting) on exit; yields a client bound to it."""
        self.run("create", "namespace", name)
        try:
            scoped = self.in_namespace(name)
            eventually(
                lambda: scoped.list("serviceaccounts"),
                what=f"the default ServiceAccount in {name}",
            )
            yield scoped
        finally:
            self.run("delete", "namespace", name, "--wait=false")


def eventually(
    check: Callable[[], Any], *, timeout: float = 90, interval: float = 0.5, what: str = ""
) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
            error = None
        except (KubectlError, KeyError, IndexError) as exc:
            error = exc
        else:
            if last:
                return last
        time.sleep(interval)
    detail = f" (last error: {error})" if error else f" (last value: {last!r})"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def condition(obj: Obj, kind: str) -> str | None:
    """The status of condition ``kind`` on ``obj``, or None when absent."""
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return str(c["status"])
    return None


def running_and_ready(pod: Obj) -> bool:
    return pod["status"].get("phase") == "Running" and condition(pod, "Ready") == "True"


def documents(text: str) -> Iterator[Obj]:
    """The non-empty YAML documents in ``text``."""
    yield from (d for d in yaml.safe_load_all(text) if d)


def install_crds(
    kube: Kube, paths: list[Path], release: tuple[str, str] | None = None
) -> list[str]:
    """Apply the CRDs in ``paths``, mark them as belonging to Helm release ``release``
    (name, namespace) if given, and wait until each is Established; their names.

    The chart installs the same CRDs as templates, and Helm refuses to install over an
    object it does not own; with Helm's ownership label and annotations, a later
    ``helm install`` of that release adopts them instead.
    """
    names: list[str] = []
    for path in paths:
        text = path.read_text()
        kube.apply(text)
        names += [d["metadata"]["name"] for d in documents(text)]
    if release is not None:
        name, namespace = release
        for crd in names:
            kube.run("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
            kube.run(
                "annotate",
                "--overwrite",
                "crd",
                crd,
                f"meta.helm.sh/release-name={name}",
                f"meta.helm.sh/release-namespace={namespace}",
            )
    for name in names:
        eventually(
            lambda n=name: condition(kube.get("crd", n), "Established") == "True",
            what=f"CRD {name} to be Established",
        )
    return names


@dataclass
class Helm:
    """helm bound to one kubeconfig."""

    kubeconfig: str
    helm: str = "helm"

    def run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [self.helm, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise HelmError(f"helm {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout
