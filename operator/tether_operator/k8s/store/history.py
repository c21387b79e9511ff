"""`KubernetesRunStore`: run history in ConfigMaps owned by the WorkflowRun.

Layout (docs/internals.md, *Kubernetes store*): a run's history is a series of
segments, ConfigMaps `<run>-h0`, `<run>-h1`, ... Each `append` adds one key to the
newest segment with a JSON merge patch (one API write); the key is the index of the
batch's first event (`00000042`) and the value the batch as a JSON array. A segment
is created by the append that first needs it, with its first batch in it, and the
store rolls to a new one before the segment reaches `segment_bytes` (32 KiB); a batch
larger than the room left goes whole into a new segment (up to 512 KiB). An event whose
encoding is over `inline_bytes` has its largest `data` fields moved to payload
ConfigMaps (`payloads.py`) and replaced by `null` plus a reference under the
envelope key `tether.dev/payloads`; `load` puts the values back, so it returns
exactly the events appended.

Keys are event indexes, so an append retried after an unknown outcome rewrites the
same positions instead of duplicating events.

Fencing (`store/fencing.py`), when the store is given a `Fence` with an epoch (leader
election on): every segment carries `tether.dev/epoch`; an append is a JSON patch
that first `test`s it; rolling over first seals the full segment (a tested patch
adding `tether.dev/sealed`), then creates the next, so a deposed leader can neither
write into a segment a newer leader claimed nor start the next one after it (the
create finds the name taken). A leader claims a run before reading its history
(`load`): it stamps its epoch on the last segment with the `resourceVersion` it
read, or, if that one is sealed, creates the next segment empty. A segment a
deposed leader created after the claim (only a new run's first one can be) holds
events no leader acknowledged: the new leader replaces it. Every object has an ownerReference to
the WorkflowRun (`bind` gives its uid) and is garbage-collected with it; when the run
is gone the store raises `RunGone` (permanent) rather than retrying.

Child runs (started by a workflow) have no WorkflowRun: the store learns a child's
parent from the engine's `RunStarted` notice (`bind_child`, told before the child's
first append is written) and stores the child under the child's name, owned by the ROOT run's
WorkflowRun (`objects.py`): the child is recovered with its root, garbage-collected
with it, and fenced like any run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.resources.naming import run_id_for, run_object
from tether_operator.k8s.store.objects import (
    LABEL_ROOT,
    config_map,
    object_name,
    owner_run,
    owner_uid,
    run_label,
    selector,
    stored_run,
)
from tether_operator.k8s.store.payloads import PayloadStore
from tether_operator.store import fill_namespace
from tether_operator.store.errors import (
    HistoryCorrupt,
    PayloadMissing,
    RunGone,
    StoreError,
)
from tether_operator.store.fencing import Fence, Fenced

__all__ = [
    "INLINE_BYTES",
    "PAYLOADS_KEY",
    "SEGMENT_BYTES",
    "Fenced",
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
SEGMENT_BYTES = 32 * 1024
"""A history segment rolls over before its data reaches this size. The API server
rewrites the whole object on every patch (about 0.15 ms per KiB here), so small
segments keep an append's cost flat; a ConfigMap could hold 1 MiB."""
FRESH_SEGMENT_BYTES = 512 * 1024
"""How much of one append a new segment takes whole. A batch larger than a segment's
room goes into a segment of its own instead of being split over several: one create
(and, with fencing, one seal of the segment before) rather than a patch, a seal and a
create per 32 KiB. Such a segment is full at once, so it is never patched."""
PAYLOADS_KEY = "tether.dev/payloads"
"""Envelope key of a stored event: `{field: payload ref}` for the fields moved out."""
SEGMENT_ANNOTATION = "tether.dev/segment"
EPOCH_ANNOTATION = "tether.dev/epoch"
"""On a history segment: the epoch (Lease `leaseTransitions`) of its writer."""
SEALED_ANNOTATION = "tether.dev/sealed"
"""On a history segment: full; the run's history goes on in the next segment."""
CLAIM_TRIES = 5
"""A claim re-reads the segments after a conflict at most this often."""

logger = logging.getLogger("tether.operator")
LISTING_SECONDS = 60.0
"""How long `load` may use the segments `run_ids` listed instead of reading them again."""

_JSON = json.JSONEncoder(separators=(",", ":"))
"""Compact and ASCII-only: a string's length is its size in bytes, and lone surrogates
survive the API server as escapes."""


@dataclass
class _RunState:
    """What the store knows about one run's objects in this process."""

    namespace: str
    name: str
    owner: str = ""
    """The WorkflowRun that owns the run's objects: a child run's root; "" for the run's own."""
    uid: str | None = None
    synced: bool = False
    """True once `next_index` and the segment fields match the API server."""
    segment: int = 0
    segment_bytes: int = 0
    segment_exists: bool = False
    next_index: int = 0
    gone: bool = False
    claimed: bool = False
    """True once this process's epoch is stamped on the run's newest segment."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def owner_name(self) -> str:
        return self.owner or self.name

    def reset(self) -> None:
        self.synced = self.segment_exists = self.gone = self.claimed = False
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


def _epoch_of(obj: dict[str, Any]) -> int:
    """The epoch stamped on a segment; -1 if none (written without fencing)."""
    annotations = obj["metadata"].get("annotations") or {}
    try:
        return int(annotations[EPOCH_ANNOTATION])
    except (KeyError, ValueError):
        return -1


def _sealed(obj: dict[str, Any]) -> bool:
    return (obj["metadata"].get("annotations") or {}).get(SEALED_ANNOTATION) == "true"


def _pointer(key: str) -> str:
    """`key` as a JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


class KubernetesRunStore:
    """A `HistoryStore` in the API server: history segments and payloads as ConfigMaps.

    `namespaces` limits `run_ids` to those namespaces (None: cluster-wide). Appends of
    one run are serialised by a lock; appends of different runs run concurrently.
    `fence` (with an epoch) fences history writes against a newer leader.
    """

    durable = True
    kind = "apiserver"
    bytes_written = 0
    """A write returns only once the API server has it."""

    def __init__(
        self,
        client: KubeClient,
        namespaces: list[str] | None = None,
        *,
        inline_bytes: int = INLINE_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
        fresh_segment_bytes: int = FRESH_SEGMENT_BYTES,
        fence: Fence | None = None,
    ) -> None:
        self._client = client
        self._fence = fence or Fence()
        self._namespaces = list(namespaces) if namespaces else None
        self._inline_bytes = inline_bytes
        self._segment_bytes = segment_bytes
        self._fresh_segment_bytes = max(fresh_segment_bytes, segment_bytes)
        self._payloads = PayloadStore(client)
        self._runs: dict[str, _RunState] = {}
        self._listing: dict[str, list[dict[str, Any]]] = {}
        """History segments `run_ids` read, kept for the `load` that usually follows."""
        self._listed_at = 0.0
        self._deleted: set[str] = set()
        """Runs deleted in this process: not written again until bound anew."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ bindings

    def bind(self, run_id: str, uid: str) -> None:
        """Make WorkflowRun `uid` the owner of everything stored for `run_id` from now on.

        A different uid than before means a new run of the same name: the store
        forgets what it knew of the old one (its objects are garbage-collected).
        """
        self._deleted.discard(run_id)
        self._own(run_id, self._state(run_id), "", uid)

    def child_started(self, run_id: str, parent_run_id: str) -> None:
        """The engine started child run `run_id` of `parent_run_id` (its `RunStarted`
        notice, handled before the child's first append is written): bind it. A child
        whose root is gone is only logged; its appends then fail with `RunGone`."""
        try:
            self.bind_child(run_id, parent_run_id)
        except StoreError as exc:
            logger.info("child run %s has nowhere to store its history: %s", run_id, exc)

    def bind_child(self, run_id: str, parent_run_id: str) -> None:
        """Store child run `run_id` with its root's objects: owned by the WorkflowRun
        that owns `parent_run_id`'s. The parent is bound before any child of it starts
        (or recovered with it); one that is not was forgotten with its deleted root:
        `RunGone`, the child's history has nowhere to go."""
        parent = self._runs.get(parent_run_id)
        if parent is None or parent.uid is None:
            raise RunGone(
                run_id,
                f"child run {run_id}: its parent run {parent_run_id} has no WorkflowRun "
                "bound in this store (its root WorkflowRun was deleted)",
            )
        state = self._state(run_id)
        if state.namespace != parent.namespace:
            raise StoreError(
                run_id,
                f"child run {run_id} is not in its parent run {parent_run_id}'s namespace "
                f"{parent.namespace}",
            )
        self._own(run_id, state, parent.owner_name, parent.uid)

    def _own(self, run_id: str, state: _RunState, owner: str, uid: str) -> None:
        """WorkflowRun `owner` ("": the run's own) with `uid` owns the run's objects from
        now on; another owner than before forgets what was known of the old one."""
        if state.uid == uid and state.owner == owner:
            return
        if state.uid is not None:
            state.reset()
            self._listing.pop(run_id, None)
        state.owner, state.uid, state.gone = owner, uid, False

    def forget(self, run_id: str) -> None:
        """Drop what this process knows of the run and of its child runs, without API
        calls (its WorkflowRun was deleted and the garbage collector removes the objects)."""
        state = self._runs.get(run_id)
        forgotten = [run_id]
        if state is not None and not state.owner:
            forgotten += [
                rid
                for rid, s in self._runs.items()
                if s.owner == state.name and s.namespace == state.namespace
            ]
        for rid in forgotten:
            self._runs.pop(rid, None)
            self._listing.pop(rid, None)

    def binding(self, run_id: str) -> str | None:
        """The uid of the WorkflowRun that owns `run_id`'s objects, if known."""
        state = self._runs.get(run_id)
        return state.uid if state else None

    def root(self, run_id: str) -> str:
        """The run id of the WorkflowRun that owns `run_id`'s objects: a child run's
        root, else (or while unknown) the run itself."""
        state = self._runs.get(run_id)
        if state is None or state.uid is None:
            return run_id
        return run_id_for(state.namespace, state.owner_name)

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
        return paths.configmaps(state.namespace, name)

    async def _check_run(self, run_id: str, state: _RunState) -> None:
        """Raise `RunGone` if the WorkflowRun bound to `run_id` no longer exists."""
        path = paths.workflow_runs(state.namespace, state.owner_name)
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
                f"WorkflowRun {state.namespace}/{state.owner_name} (uid {state.uid}) is gone: "
                "its history is not written any more",
            )

    # ------------------------------------------------------------------ append

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Add `events` after the run's stored events: one API write in the common case."""
        if not events:
            return
        if run_id in self._deleted:
            raise RunGone(run_id, f"run {run_id} was deleted: its history is not written again")
        state = self._state(run_id)
        async with state.lock:
            if state.gone:
                raise RunGone(
                    run_id,
                    f"WorkflowRun {state.namespace}/{state.owner_name} (uid {state.uid}) is gone",
                )
            if state.uid is None:
                await self._check_run(run_id, state)
            self._fence.check(run_id)
            self._listing.pop(run_id, None)
            texts = [_JSON.encode(event) for event in events]
            large = [i for i, text in enumerate(texts) if len(text) > self._inline_bytes]
            if large:
                moved = await asyncio.gather(
                    *(self._offload(run_id, state, events[i], texts[i]) for i in large)
                )
                for i, text in zip(large, moved, strict=True):
                    texts[i] = text
            for attempt in (1, 2):
                start = state.next_index
                try:
                    await self._write(run_id, state, texts)
                    self.bytes_written += sum(map(len, texts))
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

    async def _offload(
        self, run_id: str, state: _RunState, event: dict[str, Any], text: str
    ) -> str:
        """The event's JSON `text`, with fields moved to payloads until it fits inline."""
        data = event.get("data")
        if not isinstance(data, dict):
            return text
        fields = {key: _JSON.encode(value) for key, value in data.items()}
        data = dict(data)
        refs: dict[str, Any] = {}
        assert state.uid is not None
        for key in sorted(fields, key=lambda k: len(fields[k]), reverse=True):
            if len(text) <= self._inline_bytes or len(fields[key]) < MIN_PAYLOAD_BYTES:
                break
            refs[key] = await self._payloads.put(
                run_id, state.namespace, state.name, state.uid, fields[key], state.owner_name
            )
            data[key] = None
            text = _JSON.encode({**event, "data": data, PAYLOADS_KEY: refs})
        return text

    async def _write(self, run_id: str, state: _RunState, texts: list[str]) -> None:
        done = 0
        while done < len(texts):
            key = f"{state.next_index:08d}"
            fresh = state.segment_bytes == 0
            limit = self._fresh_segment_bytes if fresh else self._segment_bytes
            room = limit - state.segment_bytes - len(key) - 2
            take, size = 0, 0
            while done + take < len(texts) and size + len(texts[done + take]) + 1 <= room:
                size += len(texts[done + take]) + 1
                take += 1
            if done + take < len(texts) and not fresh:
                await self._roll(run_id, state)  # the rest goes whole into a new segment
                continue
            if take == 0:
                take = 1  # one event larger than a fresh segment: the API server judges it
            piece = "[" + ",".join(texts[done : done + take]) + "]"
            if not await self._put_piece(run_id, state, key, piece):
                await self._roll(run_id, state)
                continue
            state.segment_bytes += len(key) + len(piece)
            state.next_index += take
            done += take

    async def _roll(self, run_id: str, state: _RunState) -> None:
        """Go on in the next segment; with fencing, seal the current one first."""
        if self._fencing and state.segment_exists:
            name = object_name(state.name, f"h{state.segment}")
            seal = {"op": "add", "path": f"/metadata/annotations/{_pointer(SEALED_ANNOTATION)}"}
            await self._tested_patch(run_id, state, name, [{**seal, "value": "true"}])
        state.segment += 1
        state.segment_bytes = 0
        state.segment_exists = False

    async def _put_piece(self, run_id: str, state: _RunState, key: str, piece: str) -> bool:
        """Write one batch into the current segment; False if the segment is full."""
        name = object_name(state.name, f"h{state.segment}")
        if state.segment_exists:
            try:
                await self._patch_data(run_id, state, name, key, piece)
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
        body = self._segment_body(state, state.segment, {key: piece})
        try:
            await self._client.create(self._cm_path(state), body)
        except ApiError as exc:
            if exc.status in (403, 404):  # namespace terminating or gone
                await self._check_run(run_id, state)
            if not exc.conflict:
                raise
            await self._created_before(run_id, state, name, key, piece, body)
        state.segment_exists = state.synced = state.claimed = True
        return True

    # ------------------------------------------------------------------ fencing

    @property
    def _fencing(self) -> bool:
        return self._fence.epoch is not None

    def _segment_body(
        self, state: _RunState, index: int, data: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """History segment `index` of the run, owned by its (root) WorkflowRun."""
        assert state.uid is not None
        return config_map(
            object_name(state.name, f"h{index}"),
            run_name=state.name,
            uid=state.uid,
            part="history",
            owner=state.owner_name,
            annotations=self._annotations(index),
            data=data,
        )

    def _annotations(self, segment: int) -> dict[str, str]:
        annotations = {SEGMENT_ANNOTATION: str(segment)}
        if self._fence.epoch is not None:
            annotations[EPOCH_ANNOTATION] = str(self._fence.epoch)
        return annotations

    async def _patch_data(
        self, run_id: str, state: _RunState, name: str, key: str, piece: str
    ) -> None:
        """Write `key` into segment `name`: a merge patch, or with fencing a tested patch."""
        if not self._fencing:
            await self._client.patch(self._cm_path(state, name), {"data": {key: piece}})
            return
        if state.segment_bytes == 0:  # an empty segment a claim created: no `data` yet
            op = {"op": "add", "path": "/data", "value": {key: piece}}
        else:
            op = {"op": "add", "path": f"/data/{_pointer(key)}", "value": piece}
        await self._tested_patch(run_id, state, name, [op])

    async def _tested_patch(
        self, run_id: str, state: _RunState, name: str, ops: list[dict[str, Any]]
    ) -> None:
        """A JSON patch of segment `name` applied only while it carries this epoch.

        A failed `test` is a 422 like a segment over its size limit: the segment is
        read again to tell them apart, and a foreign epoch raises `Fenced`.
        """
        test = {
            "op": "test",
            "path": f"/metadata/annotations/{_pointer(EPOCH_ANNOTATION)}",
            "value": str(self._fence.epoch),
        }
        path = self._cm_path(state, name)
        try:
            await self._client.patch(path, [test, *ops], "json")
        except ApiError as exc:
            if exc.status != 422:
                raise
            try:
                current = await self._client.get(path)
            except ApiError:
                raise exc from None
            if _epoch_of(current) != self._fence.epoch:
                raise self._fence.trip(
                    Fenced(
                        run_id,
                        f"history ConfigMap {state.namespace}/{name} of run {run_id} belongs to "
                        f"epoch {_epoch_of(current)}, not this leader's {self._fence.epoch}: "
                        "a newer leader owns the run",
                    )
                ) from exc
            raise

    async def _claim(
        self, run_id: str, state: _RunState, segments: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Stamp this epoch on the run's newest segment (or start the next one after a
        sealed one) before its history is read; the run's segments, as claimed."""
        epoch = self._fence.epoch
        assert epoch is not None
        for _ in range(CLAIM_TRIES):
            self._fence.check(run_id)
            own = self._own_segments(state, segments)
            if not own:
                state.claimed = True
                return own
            last = own[-1]
            theirs = _epoch_of(last)
            if theirs > epoch and not await self._fence.confirm():
                raise self._fence.trip(
                    Fenced(
                        run_id,
                        f"run {run_id} was claimed by epoch {theirs}, after this leader's "
                        f"{epoch}: a newer leader owns it",
                    )
                )
            try:
                if _sealed(last):
                    body = self._segment_body(state, _segment_index(last) + 1)
                    own.append(await self._client.create(self._cm_path(state), body))
                elif theirs != epoch:
                    meta = last["metadata"]
                    stamp = {
                        "metadata": {
                            "resourceVersion": meta["resourceVersion"],
                            "annotations": {EPOCH_ANNOTATION: str(epoch)},
                        }
                    }
                    own[-1] = await self._client.patch(self._cm_path(state, meta["name"]), stamp)
                state.claimed = True
                return own
            except ApiError as exc:
                if not exc.conflict:
                    raise
            segments = await self._client.list(
                self._cm_path(state), label_selector=selector(state.name, "history")
            )
        raise StoreError(run_id, f"history of run {run_id} kept changing while it was claimed")

    async def _segments(self, run_id: str, state: _RunState) -> list[dict[str, Any]]:
        """The run's own segments from the API server (claimed first, with fencing)."""
        segments = await self._client.list(
            self._cm_path(state), label_selector=selector(state.name, "history")
        )
        if self._fencing and not state.claimed:
            return await self._claim(run_id, state, segments)
        return self._own_segments(state, segments)

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
        if self._fencing and _epoch_of(existing) != self._fence.epoch:
            await self._replace_deposed(run_id, state, existing, body)
            return
        if not state.synced:
            raise _Resync
        await self._patch_data(run_id, state, name, key, piece)

    async def _replace_deposed(
        self, run_id: str, state: _RunState, existing: dict[str, Any], body: dict[str, Any]
    ) -> None:
        """A segment this leader is creating exists with another epoch: a deposed leader
        created it after this one listed the run (its events were never this leader's
        history), unless a newer leader did (`Fenced`)."""
        theirs = _epoch_of(existing)
        name = existing["metadata"]["name"]
        if theirs > (self._fence.epoch or 0) and not await self._fence.confirm():
            raise self._fence.trip(
                Fenced(
                    run_id,
                    f"history ConfigMap {state.namespace}/{name} of run {run_id} was created "
                    f"by epoch {theirs}, newer than this leader's {self._fence.epoch}",
                )
            )
        logger.warning(
            "history ConfigMap %s/%s of run %s was written by epoch %d after this leader "
            "(epoch %s) listed it: replacing the %d keys no leader acknowledged",
            state.namespace,
            name,
            run_id,
            theirs,
            self._fence.epoch,
            len(existing.get("data") or {}),
        )
        replacement = {
            **body,
            "metadata": {
                **body["metadata"],
                "resourceVersion": existing["metadata"]["resourceVersion"],
            },
        }
        await self._client.replace(self._cm_path(state, name), replacement)

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
        own = await self._segments(run_id, state)
        self._set_position(state, own, len(self._decode(run_id, own)))

    # ------------------------------------------------------------------ load

    async def load(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of the run in append order, with payloads resolved; [] if none."""
        state = self._state(run_id)
        async with state.lock:
            if time.monotonic() - self._listed_at > LISTING_SECONDS:
                self._listing.clear()
            segments = self._listing.pop(run_id, None)
            if segments is None:
                own = await self._segments(run_id, state)
            elif self._fencing and not state.claimed:
                own = await self._claim(run_id, state, segments)
            else:
                own = self._own_segments(state, segments)
            events = self._decode(run_id, own)
            await self._resolve(run_id, state, events)
            self._set_position(state, own, len(events))
            fill_namespace(events, run_object(run_id)[0])  # its WorkflowRun's
            return events

    def _own_segments(
        self, state: _RunState, segments: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The run's segments of its bound uid (the newest uid if unbound), in order."""
        mine = [s for s in segments if stored_run(s) == state.name]
        if state.uid is None and mine:
            newest = max(mine, key=lambda s: str(s["metadata"].get("creationTimestamp", "")))
            owner = owner_run(newest)
            assert owner is not None
            state.owner = "" if owner[0] == state.name else owner[0]
            state.uid = owner[1]
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
            where = [paths.configmaps()]
        else:
            where = [paths.configmaps(ns) for ns in self._namespaces]
        pages = await asyncio.gather(
            *(self._client.list(p, label_selector=selector(part="history")) for p in where)
        )
        listing: dict[str, list[dict[str, Any]]] = {}
        for item in (i for page in pages for i in page):
            run_name = stored_run(item)
            if run_name is None:
                continue
            listing.setdefault(run_id_for(item["metadata"]["namespace"], run_name), []).append(item)
        self._listing = listing
        self._listed_at = time.monotonic()
        for run_id, segments in listing.items():
            state = self._state(run_id)
            if state.uid is None:
                self._own_segments(state, segments)
        return sorted(listing)

    async def delete(self, run_id: str) -> None:
        """Delete every object stored for the run and, for a root run, for its child
        runs (no error if there are none)."""
        state = self._state(run_id)
        self._deleted.add(run_id)
        self.forget(run_id)
        selectors = [selector(state.name)]
        if not state.owner:
            selectors.append(f"{selector()},{LABEL_ROOT}={run_label(state.name)}")
        for labels in selectors:
            await self._client.request(
                "DELETE",
                self._cm_path(state),
                params={"labelSelector": labels},
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
            run_id, state.namespace, state.name, state.uid, _JSON.encode(value), state.owner_name
        )

    async def get_payload(self, run_id: str, ref: dict[str, Any]) -> Any:
        """The value `put_payload` returned `ref` for."""
        state = self._state(run_id)
        return await self._payloads.get(run_id, state.namespace, state.name, ref)

    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        """Put a large result in payload ConfigMaps owned by the run's WorkflowRun
        (content-addressed: the copy its history wrote is found, not added again); the
        `status.resultRef` fields naming the first one."""
        ref = await self.put_payload(run_id, value)
        state = self._state(run_id)
        return {
            "configMap": object_name(state.name, f"p{ref['id']}-0"),
            "chunks": ref["chunks"],
        }
