"""The cases every history-store tier passes (`HistoryStore`'s contract).

A case takes a `Tier`: a way to open stores of that tier on one shared backing (each
store is like one operator process), and to name runs whose history it may write.
`test_conformance.py` runs every case on the memory, SQLite and Postgres tiers;
`tests/e2e/test_store_conformance_k8s.py` on the API server's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest

from tether_operator.store import (
    Fence,
    Fenced,
    HistoryCorrupt,
    HistoryStore,
    PayloadMissing,
    RunGone,
)


class Tier(Protocol):
    name: str

    async def store(self, fence: Fence | None = None) -> HistoryStore:
        """A new, opened store on the tier's backing."""
        ...

    async def run(self, name: str) -> str:
        """The id of a new run named `name` whose history may be written."""
        ...

    async def gap(self, store: HistoryStore, run_id: str) -> bool:
        """Remove the middle batch of the run's stored history; False if the tier
        cannot have a gap (nothing was removed)."""
        ...


Case = Callable[[Tier], Awaitable[None]]
CASES: list[Case] = []


def case(fn: Case) -> Case:
    CASES.append(fn)
    return fn


def ev(kind: str, i: int, **data: Any) -> dict[str, Any]:
    return {"type": kind, "time": float(i), "data": {"i": i, **data}}


async def reopened(tier: Tier, store: HistoryStore) -> HistoryStore:
    """A new store on `store`'s backing: the operator restarted."""
    await store.close()
    return await tier.store()


@case
async def appends_load_in_order(tier: Tier) -> None:
    store = await tier.store()
    a, b = await tier.run("order-a"), await tier.run("order-b")
    sizes = [1, 3, 1, 5, 2]
    expected: dict[str, list[dict[str, Any]]] = {a: [], b: []}
    n = 0
    for size in sizes:
        for run_id in (a, b):
            batch = [ev("E", n + k, run=run_id) for k in range(size)]
            n += size
            await store.append(run_id, batch)
            expected[run_id] += batch
    await store.append(a, [])
    for run_id in (a, b):
        assert await store.load(run_id) == expected[run_id]
    again = await reopened(tier, store)
    assert {a, b} <= set(await again.run_ids())
    for run_id in (a, b):
        assert await again.load(run_id) == expected[run_id]
        assert await again.load(run_id) == expected[run_id], "a load changes nothing"
    await again.append(a, [ev("After", 999)])
    assert (await again.load(a))[-1] == ev("After", 999)


@case
async def unknown_runs_are_empty(tier: Tier) -> None:
    store = await tier.store()
    run_id = await tier.run("unknown")
    assert await store.load(run_id) == []
    await store.delete(run_id)
    assert run_id not in await store.run_ids()


@case
async def a_gap_is_reported_not_skipped(tier: Tier) -> None:
    store = await tier.store()
    run_id = await tier.run("gap")
    for i in range(3):
        await store.append(run_id, [ev("E", i)])
    if not await tier.gap(store, run_id):
        pytest.skip(f"the {tier.name} tier cannot have a gap")
    with pytest.raises(HistoryCorrupt, match="gap"):
        await (await reopened(tier, store)).load(run_id)


@case
async def large_and_odd_events_round_trip(tier: Tier) -> None:
    store = await tier.store()
    run_id = await tier.run("large")
    big = "x" * (300 * 1024)
    events = [
        ev("Small", 0),
        ev("Big", 1, blob=big, nested={"list": list(range(2000))}),
        ev("Text", 2, text='snow ☃, emoji 🧵, quote " and \\ and a lone \ud800 surrogate'),
        ev("Many", 3, blobs=["y" * 20_000 for _ in range(6)]),
    ]
    await store.append(run_id, events[:2])
    await store.append(run_id, events[2:])
    assert await (await reopened(tier, store)).load(run_id) == events


@case
async def payloads_round_trip(tier: Tier) -> None:
    store = await tier.store()
    run_id = await tier.run("payload")
    await store.append(run_id, [ev("E", 0)])
    value = {"result": ["r" * 1000] * 500, "n": 1}
    ref = await store.put_payload(run_id, value)
    assert await store.put_payload(run_id, value) == ref, "the same value is stored once"
    again = await reopened(tier, store)
    assert await again.get_payload(run_id, ref) == value
    with pytest.raises(PayloadMissing):
        await again.get_payload(run_id, {**ref, "id": "0" * len(str(ref["id"]))})


@case
async def a_deposed_writer_is_fenced(tier: Tier) -> None:
    old = await tier.store(Fence(epoch=1))
    run_id = await tier.run("fenced")
    await old.append(run_id, [ev("E", 0)])
    await old.run_ids()
    assert await old.load(run_id) == [ev("E", 0)]
    await old.append(run_id, [ev("E", 1)])

    new = await tier.store(Fence(epoch=2))
    await new.run_ids()  # recovery: list, then load (which claims)
    assert await new.load(run_id) == [ev("E", 0), ev("E", 1)]
    with pytest.raises(Fenced):
        await old.append(run_id, [ev("Deposed", 2)])
    await new.append(run_id, [ev("E", 2)])
    assert await (await tier.store(Fence(epoch=2))).load(run_id) == [
        ev("E", 0),
        ev("E", 1),
        ev("E", 2),
    ], "the deposed writer wrote nothing"


@case
async def a_newer_writer_is_not_fenced_by_an_older_claim(tier: Tier) -> None:
    first = await tier.store(Fence(epoch=3))
    run_id = await tier.run("claims")
    await first.append(run_id, [ev("E", 0)])
    later = await tier.store(Fence(epoch=4))
    await later.run_ids()
    await later.load(run_id)
    await later.append(run_id, [ev("E", 1)])
    stale = await tier.store(Fence(epoch=3))
    await stale.run_ids()
    with pytest.raises(Fenced):
        await stale.load(run_id)


@case
async def children_belong_to_their_root(tier: Tier) -> None:
    store = await tier.store()
    root = await tier.run("family")
    child, grandchild = f"{root}-c1", f"{root}-c1-c1"
    await store.append(root, [ev("Root", 0)])
    store.child_started(child, root)
    await store.append(child, [ev("Child", 0)])
    store.child_started(grandchild, child)
    await store.append(grandchild, [ev("Grandchild", 0)])
    assert store.root(grandchild) == store.root(child) == store.root(root) == root

    again = await reopened(tier, store)
    assert {root, child, grandchild} <= set(await again.run_ids())
    for run_id in (root, child, grandchild):
        await again.load(run_id)
    assert again.root(grandchild) == again.root(child) == root
    await again.delete(root)
    assert not {root, child, grandchild} & set(await again.run_ids())
    assert await again.load(child) == []


@case
async def a_deleted_run_is_not_written_again(tier: Tier) -> None:
    store = await tier.store()
    run_id = await tier.run("deleted")
    child = f"{run_id}-c1"
    await store.append(run_id, [ev("Old", 0), ev("Old", 1)])
    store.child_started(child, run_id)
    await store.append(child, [ev("Child", 0)])
    await store.delete(run_id)
    assert await store.load(run_id) == []
    with pytest.raises(RunGone):
        await store.append(run_id, [ev("Late", 2)])
    with pytest.raises(RunGone):
        await store.append(child, [ev("Late", 1)])
    again = await reopened(tier, store)
    assert not {run_id, child} & set(await again.run_ids())


@case
async def forget_keeps_the_history(tier: Tier) -> None:
    store = await tier.store()
    run_id = await tier.run("forget")
    await store.append(run_id, [ev("E", 0)])
    store.forget(run_id)
    assert await store.load(run_id) == [ev("E", 0)]
    await store.append(run_id, [ev("E", 1)])
    assert await store.load(run_id) == [ev("E", 0), ev("E", 1)]
