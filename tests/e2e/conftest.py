"""Fixtures for end-to-end tests against a real Kubernetes cluster.

The cluster is the one ``KUBECONFIG`` names; without it, the session starts the
local offline cluster with ``hack/cluster up`` (root only) and leaves it running
for the next session. Each test gets its own namespace, deleted afterwards, and
the project's CRDs (``crds/*.yaml``) are installed once per session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kube import Kube, install_crds

REPO = Path(__file__).resolve().parents[2]
HACK_CLUSTER = REPO / "hack" / "cluster"
IMAGE = os.environ.get("TETHER_IMAGE", "tether:dev")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def _local_cluster_env() -> dict[str, str]:
    """Start (or reuse) the local cluster; return its KUBECONFIG and PATH."""
    if os.geteuid() != 0:
        pytest.fail(
            "e2e tests need a cluster: set KUBECONFIG, or run as root so hack/cluster up "
            "can start the local one; `pytest -m 'not e2e'` skips them",
            pytrace=False,
        )
    subprocess.run([str(HACK_CLUSTER), "up"], check=True, stdout=subprocess.DEVNULL)
    exports = subprocess.run(
        [str(HACK_CLUSTER), "env"], check=True, capture_output=True, text=True
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
        env = _local_cluster_env()
        kubeconfig = env["KUBECONFIG"]
        kubectl = shutil.which("kubectl", path=env["PATH"])
    if kubectl is None:
        pytest.fail("kubectl is not on PATH (hack/cluster env prints where it is)", pytrace=False)
    client = Kube(kubeconfig, kubectl)
    client.run("get", "--raw", "/readyz")
    return client


@pytest.fixture(scope="session")
def crds(kube: Kube) -> list[str]:
    """Install every CRD under crds/ once per session; the names installed."""
    return install_crds(kube, sorted((REPO / "crds").glob("*.yaml")))


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[Kube]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:30].strip("-")
    name = f"e2e-{stem}-{uuid.uuid4().hex[:5]}"
    with kube.scratch_namespace(name) as scoped:
        yield scoped


@pytest.fixture(scope="session")
def image() -> str:
    """The project image the cluster's nodes hold (hack/cluster loads it)."""
    return IMAGE
