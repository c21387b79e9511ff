"""`KubernetesRunStore` against a real apiserver.

Each test owns a namespace and WorkflowRun objects (created through the API, no
operator runs) that own what the store writes. A "restart" is a new store instance
on a new client: everything it knows comes from the API server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import pytest

import worker_runtime as workflows
from bench.store_bench import activity
from tests.e2e.kube import API_VERSION, Kube, eventually
from tether_operator.k8s.api.client import ApiError, KubeClient, resource_path
from tether_operator.k8s.resources.naming import run_id_for
from tether_operator.k8s.store.history import HistoryCorrupt, KubernetesRunStore, RunGone
from tether_operator.scheduler import SchedulerService
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

"""Namespaces are `<prefix>-store-<random>` (a shared cluster may want a prefix)."""

Event = dict[str, Any]


@pytest.fixture
def ns(scratch: Kube) -> str:
    """The name of the test's own namespace."""
    assert scratch.namespace is not None
    return scratch.namespace


async def new_run(client: KubeClient, ns: str, name: str = "run") -> tuple[str, str]:
    """Create WorkflowRun `name`; its run id and uid."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": "wf"}},
    }
    obj = await client.create(resource_path(API_VERSION, "workflowruns", ns), body)
    return run_id_for(ns, name), obj["metadata"]["uid"]


async def store_for(client: KubeClient, ns: str, *runs: tuple[str, str]) -> KubernetesRunStore:
    store = KubernetesRunStore(client, [ns])
    for run_id, uid in runs:
        store.bind(run_id, uid)
    return store


def config_maps(kube: Kube, ns: str) -> list[dict[str, Any]]:
    return kube.in_namespace(ns).list("configmaps", "app.kubernetes.io/managed-by=tether")


async def test_appends_load_back_in_order_with_one_write_each(
    client: KubeClient, ns: str, kube: Kube
) -> None:
    run = await new_run(client, ns)
    store = await store_for(client, ns, run)
    appended: list[Event] = []
    writes = client.writes
    for seq in range(1, 21):
        batch = activity(seq)[: 1 + seq % 4]
        await store.append(run[0], batch)
        appended += batch
    odd = {"type": "RunCompleted", "time": 2000.0, "data": {"result": "naïve 模型 \ud800 ✓"}}
    await store.append(run[0], [odd])
    appended.append(odd)
    assert client.writes - writes == 21
    assert await store.load(run[0]) == appended
    restarted = await store_for(client, ns)
    assert await restarted.load(run[0]) == appended
    (segment,) = config_maps(kube, ns)
    meta = segment["metadata"]
    assert meta["name"] == "run-h0"
    assert meta["labels"]["tether.dev/run"] == "run"
    assert meta["labels"]["tether.dev/part"] == "history"
    assert meta["ownerReferences"][0]["uid"] == run[1]
    assert meta["ownerReferences"][0]["kind"] == "WorkflowRun"


async def test_a_thousand_activity_history_spans_small_segments(
    client: KubeClient, ns: str, kube: Kube
) -> None:
    run = await new_run(client, ns)
    store = await store_for(client, ns, run)
    appended: list[Event] = []
    batches = [activity(seq) for seq in range(1, 1001)]
    for batch in batches:
        await store.append(run[0], batch)
        appended += batch
    assert len(appended) == 4000
    restarted = await store_for(client, ns)
    assert await restarted.run_ids() == [run[0]]
    assert await restarted.load(run[0]) == appended
    segments = config_maps(kube, ns)
    sizes = [len(json.dumps(s)) for s in segments]
    assert len(segments) >= 2
    assert max(sizes) < 100 * 1024
    workflow_run = kube.in_namespace(ns).get("workflowrun", "run")
    assert len(json.dumps(workflow_run)) < 4096
    # The restarted store keeps appending after what it loaded.
    await restarted.append(run[0], activity(1001))
    assert len(await (await store_for(client, ns)).load(run[0])) == 4004


async def test_a_busy_runs_large_append_is_one_write_into_a_segment_of_its_own(
    client: KubeClient, ns: str, kube: Kube
) -> None:
    run = await new_run(client, ns)
    store = await store_for(client, ns, run)
    appended = activity(1)
    await store.append(run[0], appended)
    batch = [ev for seq in range(2, 152) for ev in activity(seq)]  # 150 activities
    writes = client.writes
    await store.append(run[0], batch)
    assert client.writes - writes == 1  # no fence here, so no seal before it
    appended += batch
    segments = sorted(config_maps(kube, ns), key=lambda cm: cm["metadata"]["name"])
    assert [cm["metadata"]["name"] for cm in segments] == ["run-h0", "run-h1"]
    assert len(segments[1]["data"]) == 1
    assert len(segments[1]["data"]["00000004"]) > 32 * 1024
    await store.append(run[0], activity(152))  # h1 is over its size: a new segment
    appended += activity(152)
    assert len(config_maps(kube, ns)) == 3
    assert await (await store_for(client, ns)).load(run[0]) == appended


async def test_a_2_mib_result_survives_a_restart(client: KubeClient, ns: str, kube: Kube) -> None:
    run = await new_run(client, ns)
    store = await store_for(client, ns, run)
    # Random bytes do not compress: the worst case for the 1 MiB ConfigMap limit.
    result = base64.b64encode(os.urandom(3 * 512 * 1024)).decode()
    assert len(result) == 2 * 1024 * 1024
    events = activity(1) + activity(2, result=result) + activity(3)
    await store.append(run[0], events[:4])
    await store.append(run[0], events[4:])
    segment = kube.in_namespace(ns).get("configmap", "run-h0")
    assert len(json.dumps(segment)) < 16 * 1024
    payloads = [
        c for c in config_maps(kube, ns) if c["metadata"]["labels"]["tether.dev/part"] == "payload"
    ]
    assert len(payloads) >= 2
    assert all(c["metadata"]["ownerReferences"][0]["uid"] == run[1] for c in payloads)
    restarted = await store_for(client, ns)
    assert await restarted.run_ids() == [run[0]]
    assert await restarted.load(run[0]) == events


async def test_put_payload_round_trips_a_large_value(client: KubeClient, ns: str) -> None:
    run = await new_run(client, ns)
    store = await store_for(client, ns, run)
    value = {"rows": [[i, f"row {i}"] for i in range(60_000)]}
    ref = await store.put_payload(run[0], value)
    assert len(json.dumps(ref)) < 200
    assert await (await store_for(client, ns, run)).get_payload(run[0], ref) == value


async def test_deleting_the_run_collects_its_objects_and_stops_appends(
    client: KubeClient, ns: str, kube: Kube
) -> None:
    run = await new_run(client, ns)
    store = await store_for(client, ns, run)
    await store.append(run[0], activity(1, result="x" * 40_000))
    assert len(config_maps(kube, ns)) == 2
    await client.delete(resource_path(API_VERSION, "workflowruns", ns, "run"))
    eventually(lambda: not config_maps(kube, ns), what="the garbage collector", timeout=60)
    with pytest.raises(RunGone, match=f"WorkflowRun {ns}/run"):
        await store.append(run[0], activity(2))
    writes = client.writes
    with pytest.raises(RunGone):
        await store.append(run[0], activity(3))
    assert client.writes == writes


async def test_a_recreated_run_does_not_inherit_old_history(client: KubeClient, ns: str) -> None:
    old = await new_run(client, ns)
    store = await store_for(client, ns, old)
    await store.append(old[0], activity(1))
    # Orphan the old history so it is still there when the new run is created.
    await client.delete(resource_path(API_VERSION, "workflowruns", ns, "run"), propagation="Orphan")

    path = resource_path(API_VERSION, "workflowruns", ns, "run")
    for _ in range(100):
        try:
            await client.get(path)
        except ApiError as exc:
            if exc.not_found:
                break
            raise
        await asyncio.sleep(0.1)
    new = await new_run(client, ns)
    store.bind(new[0], new[1])
    await store.append(new[0], activity(7))
    assert await (await store_for(client, ns)).load(new[0]) == activity(7)


async def test_run_ids_and_bindings_after_a_restart(client: KubeClient, ns: str) -> None:
    runs = [await new_run(client, ns, f"run-{i}") for i in range(3)]
    store = await store_for(client, ns, *runs)
    for run_id, _ in runs:
        await store.append(run_id, activity(1))
    restarted = await store_for(client, ns)
    assert await restarted.run_ids() == sorted(run_id for run_id, _ in runs)
    for run_id, uid in runs:
        assert restarted.binding(run_id) == uid
        await restarted.append(run_id, activity(2))
        assert await restarted.load(run_id) == activity(1) + activity(2)
    await restarted.delete(runs[0][0])
    assert await (await store_for(client, ns)).run_ids() == [runs[1][0], runs[2][0]]


async def test_appending_to_history_this_process_never_loaded(client: KubeClient, ns: str) -> None:
    run = await new_run(client, ns)
    await (await store_for(client, ns, run)).append(run[0], activity(1))
    fresh = await store_for(client, ns, run)
    await fresh.append(run[0], activity(2))
    assert await (await store_for(client, ns)).load(run[0]) == activity(1) + activity(2)


async def test_concurrent_runs_keep_their_own_order(client: KubeClient, ns: str) -> None:
    runs = await asyncio.gather(*(new_run(client, ns, f"c-{i}") for i in range(8)))
    store = await store_for(client, ns, *runs)

    async def drive(run_id: str) -> list[Event]:
        appended: list[Event] = []
        for seq in range(1, 31):
            batch = activity(seq)
            await store.append(run_id, batch)
            appended += batch
        return appended

    expected = await asyncio.gather(*(drive(run_id) for run_id, _ in runs))
    restarted = await store_for(client, ns)
    for (run_id, _), appended in zip(runs, expected, strict=True):
        assert await restarted.load(run_id) == appended


async def test_a_segment_deleted_by_hand_is_reported_not_rewritten(
    client: KubeClient, ns: str
) -> None:
    run = await new_run(client, ns)
    store = await store_for(client, ns, run)
    assert await store.load(run[0]) == []
    await store.append(run[0], activity(1))
    await client.delete(resource_path("v1", "configmaps", ns, "run-h0"))
    with pytest.raises(HistoryCorrupt, match=f"ConfigMap {ns}/run-h0 of run {run[0]} vanished"):
        await store.append(run[0], activity(2))


# ------------------------------------------------------------- a real workflow's history


@workflows.activity()
async def render(size: int) -> str:
    return "".join(f"{i:07d}," for i in range(size // 8))


@workflows.activity()
async def shout(text: str) -> str:
    return text.upper()


@workflows.workflow.define(name="store-e2e-pipeline")
class Pipeline:
    @entrypoint
    async def run(self, size: int) -> dict[str, Any]:
        big = await render(size)
        small = await shout("done")
        return {"length": len(big), "tail": big[-16:], "small": small}


async def test_a_scheduler_recovers_a_real_run_from_the_store(client: KubeClient, ns: str) -> None:
    run = await new_run(client, ns)
    async with WorkflowEnvironment([Pipeline]) as env:
        result = await env.execute(Pipeline, 1_500_000, run_id=run[0], timeout=30)
        history = env.service.history(run[0])
    assert result["length"] == 1_500_000
    store = await store_for(client, ns, run)
    for start in range(0, len(history), 3):  # batches, as the history writer sends them
        await store.append(run[0], history[start : start + 3])

    service = SchedulerService(store=KubernetesRunStore(client, [ns]))
    await service.start()
    try:
        assert await service.recover() == [run[0]]
        view = service.get_run(run[0])
        assert view["phase"] == "Succeeded"
        assert view["result"] == result
        assert service.history(run[0]) == history
    finally:
        await service.stop()
