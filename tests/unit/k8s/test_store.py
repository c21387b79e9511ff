"""`KubernetesRunStore` without a cluster: object names, history decoding, and the
requests it sends, seen at the httpx transport seam (tests/e2e/test_run_store.py
runs it against a real apiserver)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
from typing import Any

import httpx
import pytest

from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.k8s.store.history import (
    PAYLOADS_KEY,
    HistoryCorrupt,
    KubernetesRunStore,
    RunGone,
    StoreError,
)
from tether_operator.k8s.store.objects import object_name, run_label, selector
from tether_operator.store import HistoryStore, fill_namespace
from tether_operator.store.fencing import Fence, Fenced

DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_long_run_names_give_valid_object_names_and_labels() -> None:
    long_a = "a" * 200 + "." + "b" * 52
    long_b = "a" * 200 + "." + "c" * 52
    for name in (long_a, long_b, "x" * 62 + "-" + "y" * 60):
        for suffix in ("h0", "h123", "p0123456789abcdef-2"):
            full = object_name(name, suffix)
            assert len(full) <= 253
            assert DNS_NAME.match(full), full
            assert full.endswith(f"-{suffix}")
        assert len(run_label(name)) <= 63
        assert LABEL_VALUE.match(run_label(name))
    assert run_label(long_a) != run_label(long_b)
    assert object_name("run", "h0") == "run-h0"
    assert run_label("run") == "run"
    assert selector("run", "history") == (
        "app.kubernetes.io/managed-by=tether,tether.dev/part=history,tether.dev/run=run"
    )


def segment(name: str, index: int, data: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"tether.dev/segment": str(index)}},
        "data": {key: json.dumps(events) for key, events in data.items()},
    }


def test_a_retried_write_replaces_the_positions_it_covers() -> None:
    segments = [
        segment("r-h0", 0, {"00000000": [0, 1, 2], "00000003": [3, 4]}),
        # The write at 3 was retried, with more events, after the store rolled over.
        segment("r-h1", 1, {"00000003": [3, 4, 5, 6], "00000007": [7]}),
    ]
    assert KubernetesRunStore._decode("ns.r", segments) == list(range(8))


def test_a_gap_in_history_is_corruption_naming_the_object() -> None:
    segments = [segment("r-h0", 0, {"00000000": [0, 1]}), segment("r-h1", 1, {"00000005": [5]})]
    with pytest.raises(HistoryCorrupt, match="ConfigMap r-h1 key 00000005 follows event 1"):
        KubernetesRunStore._decode("ns.r", segments)


def test_a_history_from_before_namespaces_gets_the_namespace_given() -> None:
    old = [{"type": "RunStarted", "time": 1.0, "data": {"run_id": "team.r-c1", "workflow": "w"}}]
    fill_namespace(old, "team")
    assert old[0]["data"]["namespace"] == "team"
    recorded = [{"type": "RunStarted", "time": 1.0, "data": {"namespace": "kept"}}]
    fill_namespace(recorded, "team")
    assert recorded[0]["data"]["namespace"] == "kept"


class FakeWrites:
    """Answers writes with 2xx (the first PATCH with a timeout) and keeps them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.deleted: list[str] = []
        """Label selectors of collection DELETEs."""
        self.fail_next_patch = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if request.method == "DELETE" and "labelSelector" in request.url.params:
            self.deleted.append(request.url.params["labelSelector"])
        if request.method == "PATCH" and self.fail_next_patch:
            self.fail_next_patch = False
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(201 if request.method == "POST" else 200, json=body or {})


def store_with(fake: FakeWrites) -> KubernetesRunStore:
    client = KubeClient(KubeConfig(server="https://api.test"), transport=httpx.MockTransport(fake))
    store = KubernetesRunStore(client, ["ns"])
    store.bind("ns.run", "uid-1")
    return store


def event(seq: int, **data: Any) -> dict[str, Any]:
    return {"type": "ActivityCompleted", "time": float(seq), "data": {"seq": seq, **data}}


async def test_an_append_retried_after_an_unknown_outcome_reuses_its_positions() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    await store.append("ns.run", [event(1), event(2)])
    fake.fail_next_patch = True
    with pytest.raises(httpx.ReadTimeout):
        await store.append("ns.run", [event(3)])
    await store.append("ns.run", [event(3), event(4)])
    await store.append("ns.run", [event(5)])
    (create, failed, retried, last) = fake.requests
    assert create[:2] == ("POST", "/api/v1/namespaces/ns/configmaps")
    assert create[2]["metadata"]["name"] == "run-h0"
    assert create[2]["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert list(create[2]["data"]) == ["00000000"]
    assert failed[2] == {"data": {"00000002": json.dumps([event(3)], separators=(",", ":"))}}
    assert list(retried[2]["data"]) == ["00000002"]
    assert list(last[2]["data"]) == ["00000004"]


async def test_segments_roll_before_they_fill() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    store._segment_bytes = 4096
    for seq in range(40):
        await store.append("ns.run", [event(seq, result="r" * 200)])
    creates = [body["metadata"]["name"] for method, _, body in fake.requests if method == "POST"]
    assert creates[:3] == ["run-h0", "run-h1", "run-h2"]
    assert len(fake.requests) == 40


async def test_large_fields_move_to_payload_config_maps() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    result = {"rows": [f"row {i}" for i in range(20_000)]}
    await store.append("ns.run", [event(1, result=result, note="n" * 2000)])
    payloads = [b for m, _, b in fake.requests if m == "POST" and "binaryData" in b]
    (history,) = [b for m, _, b in fake.requests if m == "POST" and "data" in b]
    (chunk,) = payloads
    assert chunk["metadata"]["labels"]["tether.dev/part"] == "payload"
    assert json.loads(gzip.decompress(base64.b64decode(chunk["binaryData"]["gz"]))) == result
    (stored,) = json.loads(history["data"]["00000000"])
    assert stored["data"] == {"seq": 1, "result": None, "note": "n" * 2000}
    ref = stored[PAYLOADS_KEY]["result"]
    assert chunk["metadata"]["name"] == f"run-p{ref['id']}-0"
    assert ref["chunks"] == 1


async def test_a_run_id_that_names_no_workflow_run_is_refused() -> None:
    store = store_with(FakeWrites())
    with pytest.raises(StoreError, match="does not name a WorkflowRun"):
        await store.append("nodot", [event(1)])


async def test_stored_history_is_ascii_so_sizes_are_bytes() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    await store.append("ns.run", [event(1, result="naïve 模型 \ud800")])
    (create,) = fake.requests
    text = create[2]["data"]["00000000"]
    assert text.isascii()
    assert json.loads(text)[0]["data"]["result"] == "naïve 模型 \ud800"


async def test_concurrent_appends_of_one_run_keep_call_order() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    await asyncio.gather(*(store.append("ns.run", [event(seq)]) for seq in range(10)))
    keys = [next(iter(body["data"])) for _, _, body in fake.requests]
    assert keys == [f"{i:08d}" for i in range(10)]
    written = [
        json.loads(body["data"][key]) for (_, _, body), key in zip(fake.requests, keys, strict=True)
    ]
    assert [batch[0]["data"]["seq"] for batch in written] == list(range(10))


def test_it_is_a_durable_run_store() -> None:
    store = store_with(FakeWrites())
    assert isinstance(store, HistoryStore)
    assert store.durable is True
    assert store.binding("ns.run") == "uid-1"
    assert store.binding("ns.other") is None


async def test_forget_drops_local_state_without_api_calls() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    await store.append("ns.run", [event(1)])
    store.forget("ns.run")
    assert store.binding("ns.run") is None
    assert len(fake.requests) == 1


def fenced_store_with(fake: FakeWrites, fence: Fence) -> KubernetesRunStore:
    client = KubeClient(KubeConfig(server="https://api.test"), transport=httpx.MockTransport(fake))
    store = KubernetesRunStore(client, ["ns"], fence=fence, segment_bytes=4096)
    store.bind("ns.run", "uid-1")
    return store


async def test_with_a_fence_segments_carry_the_epoch_appends_test_it_and_rolls_seal() -> None:
    fake = FakeWrites()
    store = fenced_store_with(fake, Fence(epoch=3))
    for seq in range(20):
        await store.append("ns.run", [event(seq, result="r" * 200)])
    create, append = fake.requests[0], fake.requests[1]
    assert create[2]["metadata"]["annotations"] == {
        "tether.dev/segment": "0",
        "tether.dev/epoch": "3",
    }
    test = {"op": "test", "path": "/metadata/annotations/tether.dev~1epoch", "value": "3"}
    assert append[2][0] == test
    assert append[2][1]["path"] == "/data/00000001"
    seal = [
        (path, body)
        for method, path, body in fake.requests
        if method == "PATCH" and any("sealed" in op["path"] for op in body)
    ]
    assert seal[0][0].endswith("/configmaps/run-h0")
    assert seal[0][1] == [
        test,
        {"op": "add", "path": "/metadata/annotations/tether.dev~1sealed", "value": "true"},
    ]
    first_h1 = next(
        i
        for i, (m, _, b) in enumerate(fake.requests)
        if m == "POST" and b["metadata"]["name"] == "run-h1"
    )
    assert fake.requests[first_h1 - 1] == (
        "PATCH",
        "/api/v1/namespaces/ns/configmaps/run-h0",
        seal[0][1],
    )


async def test_a_batch_larger_than_the_room_left_goes_whole_into_a_new_segment() -> None:
    fake = FakeWrites()
    store = fenced_store_with(fake, Fence(epoch=3))
    store._segment_bytes, store._fresh_segment_bytes = 4096, 64 * 1024
    await store.append("ns.run", [event(seq, result="r" * 200) for seq in range(5)])
    fake.requests.clear()
    batch = [event(seq, result="r" * 200) for seq in range(5, 45)]  # ~9 KiB
    await store.append("ns.run", batch)
    (seal, create) = fake.requests
    assert (seal[0], seal[1].rsplit("/", 1)[1]) == ("PATCH", "run-h0")
    assert (create[0], create[2]["metadata"]["name"]) == ("POST", "run-h1")
    assert list(create[2]["data"]) == ["00000005"]
    assert len(json.loads(create[2]["data"]["00000005"])) == 40
    fake.requests.clear()
    await store.append("ns.run", [event(45)])  # h1 is over its size: never patched
    assert [(m, b["metadata"]["name"]) for m, _, b in fake.requests if m == "POST"] == [
        ("POST", "run-h2")
    ]


async def test_a_batch_larger_than_a_fresh_segment_spans_fresh_segments() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    store._segment_bytes, store._fresh_segment_bytes = 4096, 8192
    await store.append("ns.run", [event(seq, result="r" * 200) for seq in range(100)])
    sizes = [len(json.loads(next(iter(b["data"].values())))) for m, _, b in fake.requests]
    assert [m for m, _, _ in fake.requests] == ["POST"] * len(sizes)
    assert sizes == [30, 30, 30, 10]  # ~270 bytes an event, 8 KiB a fresh segment


class RefusingTests(FakeWrites):
    """A segment a newer leader stamped with epoch 4: tested patches fail with 422."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.requests.append(("PATCH", request.url.path, json.loads(request.content)))
            return httpx.Response(422, json={"kind": "Status", "reason": "Invalid"})
        if request.method == "GET":
            meta = {"name": "run-h0", "annotations": {"tether.dev/epoch": "4"}}
            return httpx.Response(200, json={"metadata": meta})
        return super().__call__(request)


async def test_a_refused_test_trips_the_fence_and_nothing_more_is_written() -> None:
    fake, fence = RefusingTests(), Fence(epoch=3)
    store = fenced_store_with(fake, fence)
    await store.append("ns.run", [event(0)])  # creates run-h0
    with pytest.raises(Fenced, match="belongs to epoch 4, not this leader's 3"):
        await store.append("ns.run", [event(1)])
    assert fence.tripped
    sent = len(fake.requests)
    with pytest.raises(Fenced):
        await store.append("ns.run", [event(1)])
    assert len(fake.requests) == sent, "a tripped fence refuses without asking the apiserver"
    assert not Fenced.permanent, "the history writer must keep (not drop) fenced events"


async def test_a_leader_past_its_renew_deadline_writes_nothing() -> None:
    fake, fence = FakeWrites(), Fence(epoch=3)
    fence.guard(lambda: False)
    store = fenced_store_with(fake, fence)
    with pytest.raises(Fenced, match="no longer leads"):
        await store.append("ns.run", [event(0)])
    assert fake.requests == []


def started(run_id: str, parent: str | None) -> dict[str, Any]:
    data = {"run_id": run_id, "workflow": "child", "parent_run_id": parent, "parent_seq": 3}
    return {"type": "RunStarted", "time": 0.0, "data": data}


async def start_child(
    store: KubernetesRunStore, child: str, parent: str, *events: dict[str, Any]
) -> None:
    """What the operator does for a child: bind it on the engine's RunStarted notice,
    then append its first events."""
    store.child_started(child, parent)
    await store.append(child, [started(child, parent), *events])


async def test_a_child_run_is_stored_under_its_own_name_and_owned_by_its_root() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    await store.append("ns.run", [event(1)])
    await start_child(store, "ns.run-c3", "ns.run", event(2))
    await start_child(store, "ns.run-c3-c1", "ns.run-c3")
    creates = [b for m, _, b in fake.requests if m == "POST"]
    child, grandchild = creates[1]["metadata"], creates[2]["metadata"]
    assert child["name"] == "run-c3-h0"
    assert child["ownerReferences"][0]["name"] == "run"
    assert child["ownerReferences"][0]["uid"] == "uid-1"
    assert child["labels"]["tether.dev/run"] == "run-c3"
    assert child["labels"]["tether.dev/root"] == "run"
    assert child["annotations"]["tether.dev/run-name"] == "run-c3"
    assert grandchild["name"] == "run-c3-c1-h0"
    assert grandchild["ownerReferences"][0]["name"] == "run", "a grandchild's owner is the root"
    assert store.root("ns.run-c3-c1") == store.root("ns.run-c3") == store.root("ns.run")
    assert store.root("ns.run") == "ns.run"
    assert not any(m == "GET" for m, _, _ in fake.requests), "no WorkflowRun is looked up"


async def test_a_child_without_a_bound_parent_is_refused_naming_both() -> None:
    store = store_with(FakeWrites())
    with pytest.raises(RunGone, match=r"parent run ns\.other has no WorkflowRun bound"):
        store.bind_child("ns.other-c1", "ns.other")


async def test_large_child_payloads_belong_to_the_root_too() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    big = {"rows": [f"row {i}" for i in range(20_000)]}
    await start_child(store, "ns.run-c1", "ns.run", event(1, result=big))
    (chunk,) = [b for m, _, b in fake.requests if m == "POST" and "binaryData" in b]
    assert chunk["metadata"]["name"].startswith("run-c1-p")
    assert chunk["metadata"]["ownerReferences"][0]["name"] == "run"
    assert chunk["metadata"]["annotations"]["tether.dev/run-name"] == "run-c1"


async def test_forgetting_or_deleting_a_root_drops_its_children() -> None:
    fake = FakeWrites()
    store = store_with(fake)
    await start_child(store, "ns.run-c1", "ns.run")
    store.forget("ns.run")
    assert store.binding("ns.run-c1") is None
    store.bind("ns.run", "uid-2")
    await start_child(store, "ns.run-c1", "ns.run")
    assert store.binding("ns.run-c1") == "uid-2", "a new root of the same name rebinds the child"
    await store.delete("ns.run")
    assert store.binding("ns.run-c1") is None
    assert fake.deleted == [
        "app.kubernetes.io/managed-by=tether,tether.dev/run=run",
        "app.kubernetes.io/managed-by=tether,tether.dev/root=run",
    ]


async def test_a_fenced_child_segment_carries_the_epoch() -> None:
    fake = FakeWrites()
    store = fenced_store_with(fake, Fence(epoch=5))
    await start_child(store, "ns.run-c1", "ns.run")
    (create,) = fake.requests
    assert create[2]["metadata"]["annotations"]["tether.dev/epoch"] == "5"
    assert create[2]["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
