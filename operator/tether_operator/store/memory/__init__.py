"""The memory tier: history in a dict, for dev mode and tests. Lost when the process exits.

Two stores on one `MemoryBacking` behave like two operators on one database, which
is how the conformance suite tests fencing on this tier.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from tether_operator.store.errors import PayloadMissing
from tether_operator.store.events import JSON, payload_id
from tether_operator.store.fencing import Fence
from tether_operator.store.protocol import Event
from tether_operator.store.roots import Owned, Roots

__all__ = ["DurableMemoryStore", "MemoryBacking", "MemoryStore"]


@dataclass
class _Row:
    events: list[Event] = field(default_factory=list)
    epoch: int = 0
    uid: str | None = None
    root: str = ""


@dataclass
class MemoryBacking:
    """What a memory store holds, shareable between store instances."""

    runs: dict[str, _Row] = field(default_factory=dict)
    payloads: dict[tuple[str, str], str] = field(default_factory=dict)


class MemoryStore(Owned):
    """History in memory (`HistoryStore`); not durable."""

    durable = False
    kind = "memory"

    def __init__(self, backing: MemoryBacking | None = None, fence: Fence | None = None) -> None:
        self.backing = backing if backing is not None else MemoryBacking()
        self._fence = fence if fence is not None else Fence()
        self._roots = Roots()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _claim(self, run_id: str, row: _Row) -> None:
        epoch = self._fence.epoch
        if epoch is None:
            return
        if row.epoch > epoch:
            raise self._fence.claimed_by_newer(run_id, row.epoch)
        row.epoch = epoch

    async def append(self, run_id: str, events: list[Event]) -> None:
        if not events:
            return
        self._fence.check(run_id)
        self._roots.check(run_id)
        row = self.backing.runs.get(run_id)
        uid = self._roots.uids.get(run_id)
        if row is None or (uid is not None and row.uid != uid):
            row = self.backing.runs[run_id] = _Row(uid=uid, root=self._roots.root(run_id))
        self._claim(run_id, row)
        row.events.extend(events)

    async def load(self, run_id: str) -> list[Event]:
        row = self.backing.runs.get(run_id)
        uid = self._roots.uids.get(run_id)
        if row is None or (uid is not None and row.uid != uid):
            return []
        self._claim(run_id, row)
        self._roots.learn(run_id, row.root or run_id)
        return list(row.events)

    async def run_ids(self) -> list[str]:
        for run_id, row in self.backing.runs.items():
            self._roots.learn(run_id, row.root or run_id)
        return list(self.backing.runs)

    async def delete(self, run_id: str) -> None:
        gone = {run_id, *(r for r, row in self.backing.runs.items() if row.root == run_id)}
        for rid in gone:
            self.backing.runs.pop(rid, None)
        for key in [k for k in self.backing.payloads if k[0] in gone]:
            del self.backing.payloads[key]
        self._roots.deleted(gone | set(self._roots.children(run_id)))
        self._roots.forget(run_id)

    async def put_payload(self, run_id: str, value: Any) -> dict[str, Any]:
        text = JSON.encode(value)
        key = payload_id(text)
        self.backing.payloads[(run_id, key)] = text
        return {"id": key, "bytes": len(text)}

    async def get_payload(self, run_id: str, ref: dict[str, Any]) -> Any:
        text = self.backing.payloads.get((run_id, str(ref.get("id"))))
        if text is None:
            raise PayloadMissing(run_id, f"payload {ref.get('id')} of run {run_id} is not stored")
        return json.loads(text)

    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        return None


class DurableMemoryStore(MemoryStore):
    """A memory store the scheduler treats as durable (tests and benchmarks).

    `write_delay` seconds pass in every `append`, as a round trip to a real store would.
    """

    durable = True

    def __init__(self, write_delay: float = 0.0, backing: MemoryBacking | None = None) -> None:
        super().__init__(backing)
        self.write_delay = write_delay
        self.appends = 0
        """How many `append` calls were made (grouped writes make fewer)."""

    async def append(self, run_id: str, events: list[Event]) -> None:
        self.appends += 1
        if self.write_delay > 0:
            await asyncio.sleep(self.write_delay)
        await super().append(run_id, events)
