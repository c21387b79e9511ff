from tether_operator.store import HistoryStore
from tether_operator.store.memory import MemoryStore


async def test_in_memory_store_appends_in_order_and_forgets() -> None:
    store = MemoryStore()
    assert isinstance(store, HistoryStore)
    await store.append("r1", [{"type": "A", "time": 1.0, "data": {}}])
    await store.append("r1", [{"type": "B", "time": 2.0, "data": {}}])
    await store.append("r2", [{"type": "C", "time": 3.0, "data": {}}])
    assert [e["type"] for e in await store.load("r1")] == ["A", "B"]
    assert sorted(await store.run_ids()) == ["r1", "r2"]
    await store.delete("r1")
    await store.delete("missing")
    assert await store.load("r1") == []
    assert await store.run_ids() == ["r2"]


async def test_load_returns_a_copy() -> None:
    store = MemoryStore()
    await store.append("r", [{"type": "A", "time": 1.0, "data": {}}])
    (await store.load("r")).clear()
    assert len(await store.load("r")) == 1
