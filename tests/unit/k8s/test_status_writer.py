"""Coalesced status writes and rate-bounded Events, against a recording API server.

The API server is replaced at the seam we own: the `KubeClient`'s httpx transport.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx

from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.k8s.api.events import EventRecorder, ObjectRef
from tether_operator.k8s.runs.mirror import StatusPatch, StatusWriter


class SlowApi:
    """Answers after `delay` seconds, recording each request; 404 for paths in `gone`."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[tuple[str, str, Any]] = []
        self.gone: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if request.url.path in self.gone:
            return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
        return httpx.Response(200, json={})


def client_for(api: SlowApi) -> KubeClient:
    return KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(api.handle))


async def test_marks_during_a_write_become_one_write_of_the_latest_status() -> None:
    api = SlowApi(delay=0.05)
    client = client_for(api)
    version = {"n": 0}
    written: list[dict[str, Any]] = []

    def compute(key: str) -> StatusPatch:
        return StatusPatch(f"/runs/{key}/status", {"n": version["n"]})

    writer = StatusWriter(
        client, compute, lambda _k, s: written.append(s), lambda _k: None, min_interval=0
    )
    writer.start()
    version["n"] = 1
    writer.mark("r")
    await asyncio.sleep(0.01)  # the first write is in flight
    for n in range(2, 102):
        version["n"] = n
        writer.mark("r")
    await writer.flush()
    await writer.stop()
    await client.aclose()
    assert [s["n"] for s in written] == [1, 101]
    assert api.most_in_flight == 1


async def test_writes_of_many_objects_are_bounded_in_concurrency() -> None:
    api = SlowApi(delay=0.02)
    client = client_for(api)
    writer = StatusWriter(
        client,
        lambda key: StatusPatch(f"/runs/{key}/status", {"k": key}),
        lambda _k, _s: None,
        lambda _k: None,
        concurrency=4,
        min_interval=0,
    )
    writer.start()
    for i in range(40):
        writer.mark(f"r{i}")
    await writer.flush()
    await writer.stop()
    await client.aclose()
    assert len(api.requests) == 40
    assert api.most_in_flight <= 4


async def test_a_status_whose_object_is_gone_reports_it_and_is_not_retried() -> None:
    api = SlowApi()
    api.gone.add("/runs/r/status")
    client = client_for(api)
    gone: list[str] = []
    writer = StatusWriter(
        client,
        lambda key: StatusPatch(f"/runs/{key}/status", {}),
        lambda _k, _s: None,
        gone.append,
        min_interval=0,
    )
    writer.start()
    writer.mark("r")
    await writer.flush()
    await writer.stop()
    await client.aclose()
    assert gone == ["r"]
    assert len(api.requests) == 1


async def test_events_are_rate_bounded_and_a_full_queue_drops_the_oldest() -> None:
    api = SlowApi()
    client = client_for(api)
    events = EventRecorder(client, instance="op-0", max_queue=5, rate=1000, burst=2)
    ref = ObjectRef("ns", "r", "uid-1")
    for i in range(8):
        events.record(ref, "Normal", "RunStarted", f"message {i}")
    assert events.dropped == 3
    events.start()
    await events.stop(grace=2)
    await client.aclose()
    messages = [body["message"] for _, _, body in api.requests]
    assert messages == [f"message {i}" for i in range(3, 8)]
    method, path, body = api.requests[0]
    assert (method, path) == ("POST", "/api/v1/namespaces/ns/events")
    assert body["involvedObject"] == {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkflowRun",
        "name": "r",
        "namespace": "ns",
        "uid": "uid-1",
    }
    assert (body["type"], body["reason"], body["reportingInstance"]) == (
        "Normal",
        "RunStarted",
        "op-0",
    )


async def test_events_beyond_the_burst_wait_for_the_rate() -> None:
    api = SlowApi()
    client = client_for(api)
    events = EventRecorder(client, rate=20, burst=2)
    ref = ObjectRef("ns", "r", "uid-1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(6):
        events.record(ref, "Normal", "ActivityRetrying", f"attempt {i}")
    events.start()
    await events.stop(grace=5)
    await client.aclose()
    assert len(api.requests) == 6
    assert loop.time() - started >= 4 / 20 * 0.9  # two at once, then 20 per second


async def test_one_objects_storm_never_delays_anothers_events() -> None:
    api = SlowApi()
    client = client_for(api)
    events = EventRecorder(client, rate=1000, burst=1000)
    noisy, quiet = ObjectRef("ns", "noisy", "uid-1"), ObjectRef("ns", "quiet", "uid-2")
    for i in range(100):
        events.record(noisy, "Warning", "FailedCreate", f"refusal {i}")
    events.record(quiet, "Normal", "RunStarted", "started")
    events.start()
    await events.stop(grace=5)
    await client.aclose()
    names = [body["involvedObject"]["name"] for _, _, body in api.requests]
    assert names.index("quiet") == 1, "its turn comes right after the noisy one's first"
    assert len(names) == 101


async def test_an_event_equal_to_a_queued_one_is_folded_into_a_series() -> None:
    api = SlowApi()
    client = client_for(api)
    events = EventRecorder(client)
    ref = ObjectRef("ns", "wp", "uid-1", kind="WorkerPool")
    for _ in range(5):
        events.record(ref, "Warning", "FailedCreate", "the pod is invalid")
    events.record(ref, "Normal", "SuccessfulCreate", "created pod wp-1")
    events.start()
    await events.stop(grace=5)
    await client.aclose()
    (folded, created) = [body for _, _, body in api.requests]
    assert folded["series"]["count"] == 5
    assert folded["series"]["lastObservedTime"] >= folded["eventTime"]
    assert "series" not in created
    # Microseconds; and `kubectl describe` sorts by the whole-second lastTimestamp and
    # then keeps name order: names `<object>.<hex ns>` follow time within a second.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created["eventTime"])
    assert created["lastTimestamp"] == created["eventTime"][:19] + "Z"
    first, second = folded["metadata"]["name"], created["metadata"]["name"]
    assert first.startswith("wp.")
    assert (len(first), first) < (len(second), second)
