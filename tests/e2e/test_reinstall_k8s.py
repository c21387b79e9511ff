"""Uninstall and install again: the new operator leads at once (issue 15).

A second release of the chart, in a namespace of its own and serving an empty one, is
installed, uninstalled and installed again as a user would. The uninstall leaves the
leader-election Lease behind (the operator's Role goes before its pods stop, so the
leader cannot hand it over); the new install must not wait out the lease duration.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import CHART, IMAGE, PREFIX
from tests.e2e.kube import Helm, Kube, eventually, running_and_ready

pytestmark = pytest.mark.timeout(600)

LEASE_DURATION = 15


@pytest.fixture
def release(kube: Kube, helm: Helm, crds: list[str]) -> Iterator[tuple[str, Kube]]:
    tag = uuid.uuid4().hex[:5]
    # A release name holding the chart's: its objects and Lease are named after it.
    name = f"tether-re-{tag}"
    namespace, served = f"{PREFIX}-reinstall-{tag}", f"{PREFIX}-served-{tag}"
    kube.run("create", "namespace", served)
    try:
        yield name, kube.in_namespace(namespace)
    finally:
        helm.run("uninstall", name, "--namespace", namespace, "--ignore-not-found", "--wait")
        for ns in (namespace, served):
            kube.run("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


def install(helm: Helm, name: str, ns: Kube) -> None:
    repository, _, tag = IMAGE.rpartition(":")
    served = ns.namespace.replace("-reinstall-", "-served-") if ns.namespace else ""
    helm.run(
        "upgrade", "--install", name, str(CHART),
        "--namespace", str(ns.namespace), "--create-namespace", "--wait", "--timeout=180s",
        f"--set=image.repository={repository}", f"--set=image.tag={tag}",
        "--set=crds.install=false", f"--set=watchNamespaces={{{served}}}",
        f"--set=operator.leaderElection.leaseDurationSeconds={LEASE_DURATION}",
    )  # fmt: skip


def leader_pod(ns: Kube, name: str) -> str | None:
    """The Ready pod that holds the Lease and carries the leader label."""
    holder = str(ns.get("lease", name)["spec"].get("holderIdentity") or "")
    for pod in ns.pods(f"app.kubernetes.io/instance={name},tether.dev/leader=true"):
        pod_name = pod["metadata"]["name"]
        if running_and_ready(pod) and holder.startswith(f"{pod_name}_"):
            return str(pod_name)
    return None


def test_a_new_install_leads_at_once_after_an_uninstall(
    helm: Helm, release: tuple[str, Kube]
) -> None:
    name, ns = release
    install(helm, name, ns)
    first = eventually(lambda: leader_pod(ns, name), timeout=60, what="a first leader")
    helm.run("uninstall", name, "--namespace", str(ns.namespace), "--wait")
    left = ns.get("lease", name)
    assert left["spec"]["holderIdentity"].startswith(f"{first}_"), "the old holder stays"
    install(helm, name, ns)
    installed = time.monotonic()
    leader = eventually(
        lambda: leader_pod(ns, name), timeout=60, interval=0.2, what="a leader after reinstall"
    )
    waited = time.monotonic() - installed
    assert leader != first
    assert waited < LEASE_DURATION / 2, (
        f"the new install led {waited:.1f}s after `helm install --wait` returned"
    )
