"""Commit latency of each history-store tier alone, in one sitting.

    python -m bench.tiers_bench [--quick] [--no-apiserver]

Tiers: memory (dev mode), SQLite (`tether dev --db`, WAL, synchronous=NORMAL), Postgres
(a local server of Debian's package, fsync and synchronous_commit on: every commit is
on disk), and the API server (KUBECONFIG's cluster; skipped without one). Measured,
round by round so load on the machine hits every tier alike:

- one step's append (the four events of an activity) to one run, sequential: p50, p99;
- 64 runs appending at once (a busy operator): appends per second, and how many
  commits the Postgres tier made for them (group commit).

Writes bench/results/store-tiers.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.store_bench import activity, pct
from tests.store.postgres_server import remove, start_server
from tether_operator.store import HistoryStore
from tether_operator.store.memory import MemoryStore
from tether_operator.store.postgres import PostgresStore
from tether_operator.store.sqlite import SqliteStore

RESULTS = Path(__file__).resolve().parent / "results"

NewRun = Callable[[], Awaitable[str]]


class Tier:
    def __init__(self, name: str, store: HistoryStore, new_run: NewRun) -> None:
        self.name = name
        self.store = store
        self.new_run = new_run
        self.latency: list[float] = []
        self.rates: list[float] = []


def counter(prefix: str) -> NewRun:
    n = 0

    async def new_run() -> str:
        nonlocal n
        n += 1
        return f"bench.{prefix}-{n}"

    return new_run


async def latency_round(tier: Tier, appends: int) -> None:
    run_id = await tier.new_run()
    for seq in range(1, appends + 1):
        start = time.perf_counter()
        await tier.store.append(run_id, activity(seq))
        tier.latency.append((time.perf_counter() - start) * 1000)


async def throughput_round(tier: Tier, runs: int, appends: int) -> None:
    ids = [await tier.new_run() for _ in range(runs)]

    async def one(run_id: str) -> None:
        for seq in range(1, appends + 1):
            await tier.store.append(run_id, activity(seq))

    start = time.perf_counter()
    await asyncio.gather(*(one(r) for r in ids))
    tier.rates.append(runs * appends / (time.perf_counter() - start))


async def apiserver_tier() -> tuple[Tier, Callable[[], Awaitable[None]]] | None:
    if not os.environ.get("KUBECONFIG"):
        return None
    from bench.store_bench import Bench
    from tether_operator.k8s.api.client import KubeClient, load_config
    from tether_operator.k8s.store.history import KubernetesRunStore

    client = KubeClient(load_config())
    namespace = f"bench-tiers-{uuid.uuid4().hex[:6]}"
    await client.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    bench = Bench(client, namespace)
    store = KubernetesRunStore(client, [namespace])

    async def new_run() -> str:
        run_id, uid = await bench.new_run()
        store.bind(run_id, uid)
        return run_id

    async def cleanup() -> None:
        await client.delete(f"/api/v1/namespaces/{namespace}")
        await client.aclose()

    return Tier("apiserver", store, new_run), cleanup


async def run_all(quick: bool, apiserver: bool, directory: Path) -> dict[str, Any]:
    server = start_server()
    server.psql("CREATE DATABASE bench")
    tiers = [
        Tier("memory", MemoryStore(), counter("m")),
        Tier("sqlite", SqliteStore(directory / "history.db"), counter("s")),
        Tier("postgres", PostgresStore(server.dsn("bench")), counter("p")),
    ]
    cleanup = None
    if apiserver and (found := await apiserver_tier()) is not None:
        tiers.append(found[0])
        cleanup = found[1]
    rounds, appends, runs, per_run = (2, 50, 16, 10) if quick else (5, 200, 64, 20)
    try:
        for tier in tiers:
            await tier.store.open()
        for _ in range(rounds):
            for tier in tiers:
                await latency_round(tier, appends)
        commits_before = tiers[2].store.commits  # type: ignore[attr-defined]
        for _ in range(rounds):
            for tier in tiers:
                await throughput_round(tier, runs, per_run)
        group_commits = tiers[2].store.commits - commits_before  # type: ignore[attr-defined]
    finally:
        for tier in tiers:
            await tier.store.close()
        if cleanup is not None:
            await cleanup()
        remove(server)
    memory_p50 = pct(tiers[0].latency, 0.5)
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "appends_per_round": appends,
        "rounds": rounds,
        "runs_at_once": runs,
        "postgres_appends_per_commit": round(rounds * runs * per_run / max(group_commits, 1), 1),
        "tiers": {
            t.name: {
                "p50_ms": round(pct(t.latency, 0.5), 3),
                "p99_ms": round(pct(t.latency, 0.99), 3),
                "vs_memory": round(pct(t.latency, 0.5) / memory_p50, 1),
                "appends_per_s": round(statistics.median(t.rates)),
            }
            for t in tiers
        },
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# History-store tiers: commit latency alone",
        "",
        f"`python -m bench.tiers_bench`, {results['when']}, {results['machine']}. One "
        "append = one step's four events (~750 bytes); latency is sequential appends "
        f"to one run ({results['rounds']} rounds x {results['appends_per_round']}, tiers "
        f"alternating); throughput is {results['runs_at_once']} runs appending at once "
        "(median of the rounds).",
        "",
        "| tier | append p50 | append p99 | p50 vs memory | appends/s, runs at once |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, t in results["tiers"].items():
        lines.append(
            f"| {name} | {t['p50_ms']} ms | {t['p99_ms']} ms | {t['vs_memory']}x "
            f"| {t['appends_per_s']:,} |"
        )
    lines += [
        "",
        f"Postgres group commit: {results['postgres_appends_per_commit']} appends per "
        "commit while many runs append at once (one statement, one round trip each).",
        "Postgres runs with fsync and synchronous_commit on; SQLite with WAL and "
        "synchronous=NORMAL (a commit survives the process, not a power cut).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-apiserver", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "store-tiers"))
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        results = asyncio.run(run_all(args.quick, not args.no_apiserver, Path(directory)))
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
