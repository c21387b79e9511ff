"""The history-store conformance suite (`tests/store/conformance.py`) on the API-server
tier: ConfigMaps owned by WorkflowRuns of the test's own namespace (no operator runs)."""

from __future__ import annotations

import pytest

from tests.e2e.kube import API_VERSION, Kube
from tests.store.conformance import CASES, Case
from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import KubeClient, resource_path
from tether_operator.k8s.resources.naming import run_id_for, run_object
from tether_operator.k8s.store.history import KubernetesRunStore
from tether_operator.k8s.store.objects import selector
from tether_operator.store import Fence, HistoryStore


class ApiServerTier:
    name = "apiserver"

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def store(self, fence: Fence | None = None) -> HistoryStore:
        store = KubernetesRunStore(self.client, [self.namespace], fence=fence)
        await store.open()
        return store

    async def run(self, name: str) -> str:
        body = {
            "apiVersion": API_VERSION,
            "kind": "WorkflowRun",
            "metadata": {"name": name},
            "spec": {"workflowRef": {"name": "wf"}},
        }
        await self.client.create(resource_path(API_VERSION, "workflowruns", self.namespace), body)
        return run_id_for(self.namespace, name)

    async def gap(self, store: HistoryStore, run_id: str) -> bool:
        namespace, name = run_object(run_id)
        (segment,) = await self.client.list(
            paths.configmaps(namespace), label_selector=selector(name, "history")
        )
        second = sorted(segment["data"], key=int)[1]
        path = paths.configmaps(namespace, segment["metadata"]["name"])
        await self.client.patch(path, {"data": {second: None}})
        return True

    async def close(self) -> None:
        return None


@pytest.fixture
async def tier(client: KubeClient, scratch: Kube) -> ApiServerTier:
    assert scratch.namespace is not None
    return ApiServerTier(client, scratch.namespace)


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
async def test_conformance(tier: ApiServerTier, case: Case) -> None:
    await case(tier)
