"""`KubernetesRunStore`: run history in ConfigMaps owned by the WorkflowRun.

Layout (docs/internals.md, *Kubernetes store*): a run's history is a series of
segments, ConfigMaps `<run>-h0`, `<run>-h1`, ... Each `append` adds one key to the
newest segment with a JSON merge patch (one API write); the key is the index of the
batch's first event (`00000042`) and the value the batch as a JSON array. A segment
is created by the append that first needs it, with its first batch in it, and the
store rolls to a new one before the segment reaches `segment_bytes`. An event whose
encoding is over `inline_bytes` has its largest `data` fields moved to payload
ConfigMaps (`payloads.py`) and replaced by `null` plus a reference under the
envelope key `tether.dev/payloads`; `load` puts the values back, so it returns
exactly the events appended.

Keys are event indexes, so an append retried after an unknown outcome rewrites the
same positions instead of duplicating events. Every object has an ownerReference to
the WorkflowRun (`bind` gives its uid) and is garbage-collected with it; when the run
is gone the store raises `RunGone` (permanent) rather than retrying.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from tether_operator.k8s.client import ApiError, KubeClient, resource_path
from tether_operator.k8s.naming import run_id_for, run_object
from tether_operator.k8s.objects import (
    config_map,
    object_name,
    owner_run,
    owner_uid,
    selector,
)
from tether_operator.k8s.payloads import PayloadStore
from tether_operator.k8s.resources import API_VERSION
from tether_operator.k8s.store_errors import (
    HistoryCorrupt,
    PayloadMissing,
    RunGone,
    StoreError,
)

__all__ = [
    "INLINE_BYTES",
    "PAYLOADS_KEY",
    "SEGMENT_BYTES",
    "HistoryCorrupt",
    "KubernetesRunStore",
    "PayloadMissing",
    "RunGone",
    "StoreError",
]

INLINE_BYTES = 16 * 1024
"""An event encoded larger than this has its largest `data` fields moved to payloads."""
MIN_PAYLOAD_BYTES = 1024
"""Fields smaller than this always stay inline."""
SEGMENT_BYTES = 800 * 1024
"""A history segment rolls over before its data reaches this size (ConfigMaps hold 1 MiB)."""
PAYLOADS_KEY = "tether.dev/payloads"
"""Envelope key of a stored event: `{field: payload ref}` for the fields moved out."""
SEGMENT_ANNOTATION = "tether.dev/segment"

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass
class _RunState:
    """What the store knows about one run's objects in this process."""

    namespace: str
    name: str
    uid: str | None = None
    synced: bool = False
    """True once `next_index` and the segment fields match the API server."""
    segment: int = 0
    segment_bytes: int = 0
    segment_exists: bool = False
    next_index: int = 0
    gone: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def reset(self) -> None:
        self.synced = self.segment_exists = self.gone = False
        self.segment = self.segment_bytes = self.next_index = 0


class _Resync(Exception):
    """The run has history this process has not loaded: read it, then write again."""


def _segment_size(obj: dict[str, Any]) -> int:
    return sum(len(k) + len(v) for k, v in (obj.get("data") or {}).items())


def _segment_index(obj: dict[str, Any]) -> int:
    annotations = obj["metadata"].get("annotations") or {}
    try:
        return int(annotations[SEGMENT_ANNOTATION])
    except (KeyError, ValueError):
        return -1


class KubernetesRunStore:
    """A `RunStore` in the API server: history segments and payloads as ConfigMaps.

    `namespaces` limits `run_ids` to those namespaces (None: cluster-wide). Appends of
    one run are serialised by a lock; appends of different runs run concurrently.
    """

    durable = True
    """A write returns only once the API server has it."""

    def __init__(
        self,
        client: KubeClient,
        namespaces: list[str] | None = None,
        *,
        inline_bytes: int = INLINE_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self._client = client
        self._namespaces = list(namespaces) if namespaces else None
        self._inline_bytes = inline_bytes
        self._segment_bytes = segment_bytes
        self._payloads = PayloadStore(client)
        self._runs: dict[str, _RunState] = {}
        self._listing: dict[str, list[dict[str, Any]]] = {}
        """History segments `run_ids` read, kept for the `load` that usually follows."""

    # ------------------------------------------------------------------ bindings

    def bind(self, run_id: str, uid: str) -> None:
        """Make WorkflowRun `uid` the owner of everything stored for `run_id` from now on.

        A different uid than before means a new run of the same name: the store
        forgets what it knew of the old one (its objects are garbage-collected).
        """
        state = self._state(run_id)
        if state.uid != uid:
            if state.uid is not None:
                state.reset()
                self._listing.pop(run_id, None)
            state.uid = uid
            state.gone = False

    def binding(self, run_id: str) -> str | None:
        """The uid of the WorkflowRun that owns `run_id`'s objects, if known."""
        state = self._runs.get(run_id)
        return state.uid if state else None

    def _state(self, run_id: str) -> _RunState:
        state = self._runs.get(run_id)
        if state is None:
            try:
                namespace, name = run_object(run_id)
            except ValueError as exc:
                raise StoreError(run_id, str(exc)) from exc
            state = self._runs[run_id] = _RunState(namespace, name)
        return state

    def _cm_path(self, state: _RunState, name: str | None = None) -> str:
        return resource_path("v1", "configmaps", state.namespace, name)

    async def _check_run(self, run_id: str, state: _RunState) -> None:
        """Raise `RunGone` if the WorkflowRun bound to `run_id` no longer exists."""
        path = resource_path(API_VERSION, "workflowruns", state.namespace, state.name)
        try:
            obj = await self._client.get(path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            obj = None
        uid = obj["metadata"]["uid"] if obj else None
        if state.uid is None and uid is not None:
            state.uid = uid
            return
        if uid is None or uid != state.uid:
            state.gone = True
            raise RunGone(
                run_id,
                f"WorkflowRun {state.namespace}/{state.name} (uid {state.uid}) is gone: "
                "its history is not written any more",
            )

    # ------------------------------------------------------------------ append

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Add `events` after the run's stored events: one API write in the common case."""
        if not events:
            return
        state = self._state(run_id)
        async with state.lock:
            if state.gone:
                raise RunGone(
                    run_id, f"WorkflowRun {state.namespace}/{state.name} (uid {state.uid}) is gone"
                )
            if state.uid is None:
                await self._check_run(run_id, state)
            self._listing.pop(run_id, None)
            texts = list(await asyncio.gather(*(self._encode(run_id, state, e) for e in events)))
            for attempt in (1, 2):
                start = state.next_index
                try:
                    await self._write(run_id, state, texts)
                    return
                except _Resync:
                    state.next_index = start
                    if attempt == 2:
                        raise StoreError(
                            run_id, f"history of run {run_id} keeps changing under the store"
                        ) from None
                    await self._sync(run_id, state)
                except BaseException:
                    # Positions are keys: a retry rewrites the same indexes, never duplicates.
                    state.next_index = start
                    raise

    async def _encode(self, run_id: str, state: _RunState, event: dict[str, Any]) -> str:
        """The event's JSON, with fields moved to payloads until it fits inline."""
        text = _JSON.encode(event)
        data = event.get("data")
        if len(text) <= self._inline_bytes or not isinstance(data, dict):
            return text
        fields = {key: _JSON.encode(value) for key, value in data.items()}
        data = dict(data)
        refs: dict[str, Any] = {}
        assert state.uid is not None
        for key in sorted(fields, key=lambda k: len(fields[k]), reverse=True):
            if len(text) <= self._inline_bytes or len(fields[key]) < MIN_PAYLOAD_BYTES:
                break
            refs[key] = await self._payloads.put(
                run_id, state.namespace, state.name, state.uid, fields[key]
            )
            data[key] = None
            text = _JSON.encode({**event, "data": data, PAYLOADS_KEY: refs})
        return text

    async def _write(self, run_id: str, state: _RunState, texts: list[str]) -> None:
        done = 0
        while done < len(texts):
            key = f"{state.next_index:08d}"
            room = self._segment_bytes - state.segment_bytes - len(key) - 2
            take, size = 0, 0
            while done + take < len(texts) and size + len(texts[done + take]) + 1 <= room:
                size += len(texts[done + take]) + 1
                take += 1
            if take == 0:
                if state.segment_bytes > 0:
                    self._roll(state)
                    continue
                take = 1  # one event larger than a segment: the API server judges it
            piece = "[" + ",".join(texts[done : done + take]) + "]"
            if not await self._put_piece(run_id, state, key, piece):
                self._roll(state)
                continue
            state.segment_bytes += len(key) + len(piece)
            state.next_index += take
            done += take

    @staticmethod
    def _roll(state: _RunState) -> None:
        state.segment += 1
        state.segment_bytes = 0
        state.segment_exists = False

    async def _put_piece(self, run_id: str, state: _RunState, key: str, piece: str) -> bool:
        """Write one batch into the current segment; False if the segment is full."""
        name = object_name(state.name, f"h{state.segment}")
        if state.segment_exists:
            try:
                await self._client.patch(self._cm_path(state, name), {"data": {key: piece}})
            except ApiError as exc:
                if exc.not_found:
                    await self._check_run(run_id, state)
                    raise HistoryCorrupt(
                        run_id,
                        f"history ConfigMap {state.namespace}/{name} of run {run_id} vanished "
                        "while the WorkflowRun exists; delete and re-create the run",
                    ) from exc
                if exc.status in (413, 422) and state.segment_bytes > 0:
                    return False
                raise
            return True
        assert state.uid is not None
        body = config_map(
            name,
            run_name=state.name,
            uid=state.uid,
            part="history",
            annotations={SEGMENT_ANNOTATION: str(state.segment)},
            data={key: piece},
        )
        try:
            await self._client.create(self._cm_path(state), body)
        except ApiError as exc:
            if exc.status in (403, 404):  # namespace terminating or gone
                await self._check_run(run_id, state)
            if not exc.conflict:
                raise
            await self._created_before(run_id, state, name, key, piece, body)
        state.segment_exists = state.synced = True
        return True

    async def _created_before(
        self,
        run_id: str,
        state: _RunState,
        name: str,
        key: str,
        piece: str,
        body: dict[str, Any],
    ) -> None:
        """A segment create found the name taken (409): by an earlier try of ours, by
        history this process has not loaded, or by a deleted run of the same name."""
        existing = await self._client.get(self._cm_path(state, name))
        if owner_uid(existing) != state.uid:
            await self._delete_stale(state)
            await self._client.create(self._cm_path(state), body)
            return
        if not state.synced:
            raise _Resync
        await self._client.patch(self._cm_path(state, name), {"data": {key: piece}})

    async def _delete_stale(self, state: _RunState) -> None:
        """Delete objects of the run's name left over from an earlier WorkflowRun."""
        items = await self._client.list(self._cm_path(state), label_selector=selector(state.name))
        for item in items:
            if owner_uid(item) != state.uid:
                await self._client.delete(
                    self._cm_path(state, item["metadata"]["name"]),
                    preconditions={"uid": item["metadata"]["uid"]},
                )

    async def _sync(self, run_id: str, state: _RunState) -> None:
        segments = await self._client.list(
            self._cm_path(state), label_selector=selector(state.name, "history")
        )
        own = self._own_segments(state, segments)
        self._set_position(state, own, len(self._decode(run_id, own)))

    # ------------------------------------------------------------------ load

    async def load(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of the run in append order, with payloads resolved; [] if none."""
        state = self._state(run_id)
        async with state.lock:
            segments = self._listing.pop(run_id, None)
            if segments is None:
                segments = await self._client.list(
                    self._cm_path(state), label_selector=selector(state.name, "history")
                )
            own = self._own_segments(state, segments)
            events = self._decode(run_id, own)
            await self._resolve(run_id, state, events)
            self._set_position(state, own, len(events))
            return events

    def _own_segments(
        self, state: _RunState, segments: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The run's segments of its bound uid (the newest uid if unbound), in order."""
        mine = [s for s in segments if (owner_run(s) or ("", ""))[0] == state.name]
        if state.uid is None and mine:
            newest = max(mine, key=lambda s: str(s["metadata"].get("creationTimestamp", "")))
            state.uid = owner_uid(newest)
        return sorted((s for s in mine if owner_uid(s) == state.uid), key=_segment_index)

    @staticmethod
    def _set_position(state: _RunState, own: list[dict[str, Any]], count: int) -> None:
        state.next_index = count
        state.synced = True
        if own:
            state.segment = max(_segment_index(own[-1]), 0)
            state.segment_bytes = _segment_size(own[-1])
            state.segment_exists = True
        else:
            state.segment = state.segment_bytes = 0
            state.segment_exists = False

    @staticmethod
    def _decode(run_id: str, segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for segment in segments:
            name = segment["metadata"]["name"]
            data = segment.get("data") or {}
            try:
                keys = sorted(data, key=int)
            except ValueError as exc:
                raise HistoryCorrupt(
                    run_id,
                    f"history ConfigMap {name} of run {run_id} has a key that is no event index",
                ) from exc
            for key in keys:
                start = int(key)
                if start > len(events):
                    raise HistoryCorrupt(
                        run_id,
                        f"history of run {run_id} has a gap: ConfigMap {name} key {key} follows "
                        f"event {len(events) - 1}",
                    )
                try:
                    batch = json.loads(data[key])
                except ValueError as exc:
                    raise HistoryCorrupt(
                        run_id,
                        f"history ConfigMap {name} key {key} of run {run_id} is not JSON: {exc}",
                    ) from exc
                # A retried write may cover positions written before: it replaces them.
                events[start : start + len(batch)] = batch
        return events

    async def _resolve(self, run_id: str, state: _RunState, events: list[dict[str, Any]]) -> None:
        wanted = [
            (event, key, ref)
            for event in events
            if PAYLOADS_KEY in event
            for key, ref in event[PAYLOADS_KEY].items()
        ]
        values = await asyncio.gather(
            *(self._payloads.get(run_id, state.namespace, state.name, ref) for _, _, ref in wanted)
        )
        for (event, key, _), value in zip(wanted, values, strict=True):
            event["data"][key] = value
        for event in events:
            event.pop(PAYLOADS_KEY, None)

    # ------------------------------------------------------------------ runs

    async def run_ids(self) -> list[str]:
        """Every run with stored history in the watched namespaces, bound to its owner."""
        if self._namespaces is None:
            paths = [resource_path("v1", "configmaps")]
        else:
            paths = [resource_path("v1", "configmaps", ns) for ns in self._namespaces]
        pages = await asyncio.gather(
            *(self._client.list(p, label_selector=selector(part="history")) for p in paths)
        )
        listing: dict[str, list[dict[str, Any]]] = {}
        for item in (i for page in pages for i in page):
            owner = owner_run(item)
            if owner is None:
                continue
            listing.setdefault(run_id_for(item["metadata"]["namespace"], owner[0]), []).append(item)
        self._listing = listing
        for run_id, segments in listing.items():
            state = self._state(run_id)
            if state.uid is None:
                self._own_segments(state, segments)
        return sorted(listing)

    async def delete(self, run_id: str) -> None:
        """Delete every object stored for the run (no error if there are none)."""
        state = self._state(run_id)
        del self._runs[run_id]
        self._listing.pop(run_id, None)
        await self._client.request(
            "DELETE",
            self._cm_path(state),
            params={"labelSelector": selector(state.name)},
            body={"kind": "DeleteOptions", "apiVersion": "v1"},
        )

    # ------------------------------------------------------------------ payloads

    async def put_payload(self, run_id: str, value: Any) -> dict[str, Any]:
        """Store a large JSON value for the run; a small reference to give `get_payload`."""
        state = self._state(run_id)
        if state.uid is None:
            await self._check_run(run_id, state)
        assert state.uid is not None
        return await self._payloads.put(
            run_id, state.namespace, state.name, state.uid, _JSON.encode(value)
        )

    async def get_payload(self, run_id: str, ref: dict[str, Any]) -> Any:
        """The value `put_payload` returned `ref` for."""
        state = self._state(run_id)
        return await self._payloads.get(run_id, state.namespace, state.name, ref)
