"""Fixtures for end-to-end tests against a real Kubernetes cluster.

The cluster is the one ``KUBECONFIG`` names; without it, the session starts the
kind cluster with ``hack/kind-up`` (offline: root only) and leaves it running for
the next session. Each test gets its own namespace, deleted afterwards, and
the project's CRDs (``crds/*.yaml``) are installed once per session.

Tests of the operator use ``tether``: the chart installed once per session with
``helm upgrade --install`` (as release ``tether`` in ``tether-system``, the user's
path), its operator ready and serving only the session's own namespaces
(``watchNamespaces``), so it never touches the objects other tests (the CRD tests)
patch by hand, nor another session's on a shared cluster. At the end the workloads'
namespaces are deleted, the release uninstalled, and the session fails if anything but the kept CRDs
is left. When the release exists at session start (``hack/kind-up`` installs it, serving
every namespace), it is re-scoped before any test runs. Environment:

- ``TETHER_IMAGE``: the image of the operator and of every worker pod (default
  ``tether:dev``, which ``hack/kind-up`` builds and loads; load another with
  ``kind load docker-image TAG --name tether``).
- ``TETHER_E2E_PREFIX``: the first word of every namespace (default ``e2e``); give
  parallel sessions on one cluster different ones.
- ``TETHER_E2E_RELEASE``, ``TETHER_E2E_RELEASE_NAMESPACE``: the Helm release
  (default ``tether`` in ``tether-system``).
- ``TETHER_E2E_HELM_ARGS``: extra ``helm upgrade`` arguments, split on spaces (a second
  release on a shared cluster passes ``--set=crds.install=false``).
- ``TETHER_E2E_STORE``: the history store of the release, ``apiserver`` (default) or
  ``postgres`` (the chart's embedded Postgres, on a hostPath PersistentVolume the
  session makes; ``make e2e-postgres`` runs the store, operator-kill, session and
  example modules so).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.kube import (
    PREFIX,
    Helm,
    HelmError,
    Kube,
    KubectlError,
    Obj,
    eventually,
    install_crds,
)
from tests.e2e.nodes import worker_nodes
from tests.store.conftest import postgres_dsn, postgres_server  # noqa: F401 (fixtures)
from tether_operator.k8s.api.client import KubeClient, load_config

REPO = Path(__file__).resolve().parents[2]
KIND_UP = REPO / "hack" / "kind-up"
LOCAL_PV = REPO / "hack" / "local-pv"
CHART = REPO / "charts" / "tether"
IMAGE = os.environ.get("TETHER_IMAGE", "tether:dev")
RELEASE = os.environ.get("TETHER_E2E_RELEASE", "tether")
RELEASE_NAMESPACE = os.environ.get("TETHER_E2E_RELEASE_NAMESPACE", "tether-system")
HELM_ARGS = os.environ.get("TETHER_E2E_HELM_ARGS", "").split()
STORE = os.environ.get("TETHER_E2E_STORE", "apiserver")
POSTGRES_UID, POSTGRES_GID = 999, 999
"""The postgres user of the tether-postgres image (the chart runs it so)."""
LEADER_LABEL = "tether.dev/leader"
"""On the operator pod that leads (the chart runs two replicas; the Service follows it)."""
WORKLOADS = ("examples", "runs", "sessions", "tenant-a", "tenant-b", "chaos", "ui", "schedules")
"""The namespaces the session's operator serves, one per test module that needs it."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _kind_cluster_env() -> dict[str, str]:
    """Start (or reuse) the kind cluster; return its KUBECONFIG, PATH and DOCKER_HOST."""
    if os.geteuid() != 0:
        pytest.fail(
            "e2e tests need a cluster: set KUBECONFIG, or run as root so hack/kind-up "
            "can start kind offline; `pytest -m 'not e2e'` skips them",
            pytrace=False,
        )
    subprocess.run([str(KIND_UP)], check=True, stdout=subprocess.DEVNULL)
    env = _cluster_env()
    os.environ.update(env)  # docker (node power) and helm reach the same cluster
    return env


def _cluster_env() -> dict[str, str]:
    """The exports `hack/kind-up env` prints."""
    exports = subprocess.run(
        [str(KIND_UP), "env"], check=True, capture_output=True, text=True
    ).stdout
    env: dict[str, str] = {}
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", os.environ["PATH"])
    return env


@pytest.fixture(scope="session")
def kube() -> Kube:
    """kubectl against the e2e cluster (no namespace)."""
    kubeconfig = os.environ.get("KUBECONFIG")
    kubectl = shutil.which("kubectl")
    if not kubeconfig:
        env = _kind_cluster_env()
        kubeconfig = env["KUBECONFIG"]
        kubectl = shutil.which("kubectl", path=env["PATH"])
    if kubectl is None:
        pytest.fail("kubectl is not on PATH (hack/kind-up env prints where it is)", pytrace=False)
    client = Kube(kubeconfig, kubectl)
    client.run("get", "--raw", "/readyz")
    return client


@pytest.fixture(scope="session")
def helm(kube: Kube) -> Helm:
    """helm against the e2e cluster."""
    binary = shutil.which("helm") or shutil.which("helm", path=_cluster_env()["PATH"])
    if binary is None:
        pytest.fail("helm is not on PATH (hack/kind-up env prints where it is)", pytrace=False)
    return Helm(kube.kubeconfig, binary)


@pytest.fixture
async def client(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeClient]:
    """Our async API client against the e2e cluster (its kubeconfig, not in-cluster)."""
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = KubeClient(load_config())
    yield api
    await api.aclose()


@pytest.fixture
def scratch(kube: Kube, crds: list[str], request: pytest.FixtureRequest) -> Iterator[Kube]:
    """A namespace of one test's own, named after it, with the CRDs installed; deleted
    (without waiting) after the test."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:24].strip("-")
    with kube.scratch_namespace(f"{PREFIX}-{stem}-{uuid.uuid4().hex[:5]}") as scoped:
        yield scoped


@pytest.fixture(scope="session")
def crds(kube: Kube) -> list[str]:
    """Install every CRD under crds/ once per session (adoptable by the Helm release)."""
    paths = sorted((REPO / "crds").glob("*.yaml"))
    return install_crds(kube, paths, release=(RELEASE, RELEASE_NAMESPACE))


def _namespace_name(stem: str) -> str:
    return f"{PREFIX}-{stem}-{uuid.uuid4().hex[:5]}"


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[Kube]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:30].strip("-")
    with kube.scratch_namespace(_namespace_name(stem)) as scoped:
        yield scoped


@pytest.fixture(scope="session")
def image() -> str:
    """The project image the cluster's nodes hold (hack/kind-up loads it)."""
    return IMAGE


@dataclass(frozen=True)
class Install:
    """The session's Helm release of the chart, and the namespaces its operator serves."""

    release: str
    system: Kube
    """kubectl in the release namespace."""
    workloads: dict[str, Kube]
    """kubectl in each namespace the operator serves, by purpose (`WORKLOADS`)."""

    def operator_pods(self) -> list[Obj]:
        selector = f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=operator"
        return self.system.pods(selector)

    def leader_pods(self) -> list[Obj]:
        """The operator pod that leads (it labels itself `tether.dev/leader=true`)."""
        return [p for p in self.operator_pods() if p["metadata"]["labels"].get(LEADER_LABEL)]

    def metric(self, name: str, **labels: str) -> float:
        """Sample `name{labels}` of the leading operator's `/metrics` (through the API
        server's pod proxy, as a user without a port-forward reads it); 0 if absent.
        While leadership moves two pods may carry the leader label: the one whose
        `tether_leader` is 1 is asked."""

        def leading() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            for pod in self.leader_pods():
                name_ = pod["metadata"]["name"]
                path = f"/api/v1/namespaces/{self.system.namespace}/pods/{name_}:9090/proxy/metrics"
                try:
                    text = self.system.run("get", "--raw", path)
                except KubectlError:
                    continue
                samples = {
                    (s.name, tuple(sorted(s.labels.items()))): float(s.value)
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                }
                if samples.get(("tether_leader", ())) == 1.0:
                    return samples
            return None

        found = eventually(leading, timeout=30, what="the leader's /metrics")
        return float(found.get((name, tuple(sorted(labels.items()))), 0.0))

    def operator_logs(self) -> str:
        leaders = self.leader_pods()
        pod = leaders[0]["metadata"]["name"] if leaders else f"deployment/{self.release}"
        return self.system.run("logs", pod, "--tail=200")


@pytest.fixture(scope="session", autouse=True)
def _scoped_operator(helm: Helm, request: pytest.FixtureRequest) -> None:
    """Before any test: re-scope a release installed before the session (hack/kind-up's,
    which serves every namespace) by installing the session's over it."""
    try:
        helm.run("status", RELEASE, "--namespace", RELEASE_NAMESPACE)
    except HelmError:
        return
    request.getfixturevalue("tether")


@pytest.fixture(scope="session")
def tether(kube: Kube, helm: Helm, crds: list[str]) -> Iterator[Install]:
    """The chart installed with Helm, its operator ready; uninstalled at the end."""
    workloads = {purpose: _namespace_name(purpose) for purpose in WORKLOADS}
    for name in workloads.values():
        kube.run("create", "namespace", name)
    # A previous session deletes the release namespace without waiting: Helm cannot
    # install into it while it is terminating.
    phase = kube.run(
        "get", "namespace", RELEASE_NAMESPACE, "--ignore-not-found", "-o=jsonpath={.status.phase}"
    )
    if phase.strip() == "Terminating":
        kube.run(
            "wait", "--for=delete", f"namespace/{RELEASE_NAMESPACE}", "--timeout=120s", timeout=130
        )
    repository, _, tag = IMAGE.rpartition(":")
    store_args = _postgres_volume(kube) if STORE == "postgres" else []
    args = [
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout=180s",
        f"--set=image.repository={repository}",
        f"--set=image.tag={tag}",
        "--set=operator.logLevel=DEBUG",
        f"--set=watchNamespaces={{{','.join(workloads.values())}}}",
        *store_args,
        *HELM_ARGS,
    ]
    install = Install(
        release=RELEASE,
        system=kube.in_namespace(RELEASE_NAMESPACE),
        workloads={purpose: kube.in_namespace(name) for purpose, name in workloads.items()},
    )
    try:
        helm.run(*args)
        yield install
    finally:
        # Nothing of a run waits for the operator (no finalizers), so the workloads'
        # namespaces go on being deleted after it is gone.
        for name in workloads.values():
            kube.run("delete", "namespace", name, "--wait=false")
        helm.run("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait")
        if STORE == "postgres":
            _remove_postgres_volume(kube)
    assert_only_crds_left(kube, RELEASE, RELEASE_NAMESPACE, crds)
    kube.run("delete", "namespace", RELEASE_NAMESPACE, "--wait=false")


POSTGRES_PV = f"{RELEASE}-e2e-postgres"


def _postgres_volume(kube: Kube) -> list[str]:
    """A hostPath PersistentVolume for the embedded Postgres's claim (`hack/local-pv`:
    the offline kind cluster has no provisioner), and the Helm arguments that use it."""
    owner = f"{POSTGRES_UID}:{POSTGRES_GID}"
    subprocess.run([str(LOCAL_PV), "create", POSTGRES_PV, "1Gi", owner], check=True)
    # The database is one pod, like the leader: both go on the first node, so the
    # node-loss test (which spares the leader's node) spares the database too.
    first = worker_nodes(kube)[0]
    pin = f"kubernetes\\.io/hostname={first}"
    return [
        "--set=store.type=postgres",
        "--set=store.postgres.embedded.enabled=true",
        "--set=store.postgres.embedded.storageClassName=tether-local",
        f"--set=store.postgres.embedded.nodeSelector.{pin}",
        f"--set=operator.nodeSelector.{pin}",
    ]


def _remove_postgres_volume(kube: Kube) -> None:
    """The StatefulSet's claim outlives `helm uninstall` (as claims do): delete it and
    the volume."""
    claim = f"data-{RELEASE}-postgres-0"
    kube.in_namespace(RELEASE_NAMESPACE).run("delete", "pvc", claim, "--ignore-not-found")
    subprocess.run([str(LOCAL_PV), "delete", POSTGRES_PV], check=True)


def assert_only_crds_left(kube: Kube, release: str, namespace: str, crds: list[str]) -> None:
    """After `helm uninstall`: none of the release's objects is left but its CRDs (the
    garbage collector may take a few seconds over the operator's ReplicaSet and pod)."""
    instance = f"app.kubernetes.io/instance={release}"
    system = kube.in_namespace(namespace)

    def leftovers() -> list[str]:
        kinds = (
            "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,configmaps"
        )
        left = system.run("get", kinds, "-l", instance, "-o", "name").split()
        left += system.run("get", "secrets", "-l", "owner=helm", "-o", "name").split()
        left += kube.run(
            "get", "clusterroles,clusterrolebindings", "-l", instance, "-o", "name"
        ).split()
        left += kube.run("get", "rolebindings", "-A", "-l", instance, "-o", "name").split()
        return left

    deadline = time.monotonic() + 60
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"helm uninstall left these behind: {left}"
    kept = set(kube.run("get", "crds", "-o", "name").split())
    assert {f"customresourcedefinition.apiextensions.k8s.io/{name}" for name in crds} <= kept, (
        "the CRDs are kept (helm.sh/resource-policy: keep)"
    )
