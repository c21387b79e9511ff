"""The operator on the Postgres tier, as a host process against the cluster and a real
Postgres server (`tests/store/postgres_server.py`): history goes to the database, the
WorkflowRun is the one object in etcd, and neither the operator killed three times nor
the database stopped mid-run loses a step or runs an acknowledged one again. A wrong
password or an unreachable database is said in the log and in /readyz, and the operator
keeps running (no crash loop) until the database answers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.kube import PREFIX, Kube, eventually
from tests.e2e.operator_env import (
    TESTDATA,
    Operator,
    OperatorEnv,
    operator_env,
    run_across_an_operator_kill,
    wait_for,
    workflow_run,
)
from tests.store.postgres_server import PASSWORD, PostgresServer

pytestmark = pytest.mark.timeout(600)

STEPS = TESTDATA / "operator_workflows.py"


@pytest.fixture
def env(kube: Kube, crds: list[str], tmp_path: Path, postgres_dsn: str) -> Iterator[OperatorEnv]:
    with operator_env(
        kube, tmp_path, ["--store", "postgres"], {"TETHER_STORE_DSN": postgres_dsn}
    ) as started:
        yield started


def stored_events(dsn: str, run_id: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT length FROM runs WHERE run_id = $1", run_id))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_history_is_in_the_database_and_etcd_holds_only_the_run(
    env: OperatorEnv, postgres_dsn: str
) -> None:
    env.workers.start(STEPS, "worker-a")
    env.ns.apply(workflow_run("pg", "steps", {"count": 5}))
    run = wait_for(env.ns, "pg")
    assert run["status"]["result"]["count"] == 5
    assert not env.ns.list("configmaps", "tether.dev/part=history"), "no history in etcd"
    assert stored_events(postgres_dsn, f"{env.ns.namespace}.pg") >= 5 * 3
    assert "recovered 0 runs from the postgres store" in env.operator.log()
    assert PASSWORD not in env.operator.log(), "the DSN's password is never printed"


def test_the_operator_killed_three_times_finishes_the_run_with_no_step_run_twice(
    env: OperatorEnv, tmp_path: Path
) -> None:
    count = 15
    run, executions = run_across_an_operator_kill(
        env, tmp_path / "ledger.txt", "thrice", "steps", {"count": count, "seconds": 0.3}, kills=3
    )
    assert run["status"]["result"] == {"count": count, "sum": sum(i * i for i in range(count))}
    assert sorted(set(executions)) == list(range(count))
    # Only a step whose completion was in flight at a kill may run again.
    assert len(executions) <= count + 3, executions
    assert env.operator.stop(signal.SIGTERM, timeout=20) == 0


def test_the_database_stopped_mid_run_pauses_runs_and_loses_nothing(
    env: OperatorEnv, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    env.workers.start(STEPS, "worker-a", TETHER_TEST_LEDGER=str(ledger))
    count = 16
    for name in ("down-a", "down-b"):
        env.ns.apply(workflow_run(name, "steps", {"count": count, "seconds": 0.2}))
    eventually(lambda: len(ledger.read_text().split()) >= 6, what="six steps done")
    postgres_server.kill()
    try:
        time.sleep(4)
        assert env.operator.process is not None
        assert env.operator.process.poll() is None, "the operator waits for the database"
        log = env.operator.log()
        assert "history database" in log, log[-2000:]
        assert "unavailable" in log, log[-2000:]
    finally:
        postgres_server.start()
    for name in ("down-a", "down-b"):
        run = wait_for(env.ns, name, timeout=180)
        assert run["status"]["progress"] == f"{count}/{count}"
    executions = [int(line) for line in ledger.read_text().split()]
    assert sorted(set(executions)) == list(range(count))
    # Two runs of 16 steps; a step whose completion waited on the database may run
    # again, one per run at most.
    assert len(executions) <= 2 * count + 2, executions


def test_a_large_result_is_read_back_from_the_database_after_a_restart(
    env: OperatorEnv,
) -> None:
    """Only the size is in the status (etcd holds one small object per run): `tether
    get run -o json` reads the result from the run's history, also once a new operator
    process no longer holds the run."""
    env.workers.start(STEPS, "worker-a")
    env.ns.apply(workflow_run("big", "large-result", {"size": 100_000}))
    run = wait_for(env.ns, "big")
    ref = eventually(lambda: env.ns.get("wfr", "big")["status"].get("resultRef"), what="resultRef")
    assert ref == {"bytes": 100_002}, ref
    assert "result" not in run["status"]
    env.operator.stop()
    env.operator.start()
    got = subprocess.run(
        [sys.executable, "-m", "tether_operator.cli", "--server", env.operator.url,
         "get", "run", f"{env.ns.namespace}.big", "-o", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(got.stdout)["result"] == "x" * 100_000


@pytest.mark.parametrize(
    ("dsn", "said"),
    [
        ("wrong-password", "refused the login"),
        ("postgresql://tether:secret-pw@127.0.0.1:1/tether", "unavailable"),
    ],
)
def test_a_database_it_cannot_use_is_said_in_readiness_and_the_operator_keeps_running(
    kube: Kube,
    crds: list[str],
    tmp_path: Path,
    postgres_server: PostgresServer,
    dsn: str,
    said: str,
) -> None:
    if dsn == "wrong-password":
        dsn = postgres_server.dsn("postgres", password="secret-pw")
    name = f"{PREFIX}-op-{uuid.uuid4().hex[:8]}"
    with kube.scratch_namespace(name):
        operator = Operator(
            kube, name, tmp_path, args=["--store", "postgres"], env={"TETHER_STORE_DSN": dsn}
        )
        operator.start(ready=False)
        try:

            def says_why() -> bool:
                try:
                    status, body = operator.get("/readyz")
                except OSError:
                    return False
                return status == 503 and said in str((body or {}).get("store", ""))

            eventually(says_why, timeout=30, what=f"/readyz to say {said!r}")
            time.sleep(3)
            assert operator.process is not None
            assert operator.process.poll() is None, "no crash loop: it keeps retrying"
            log = operator.log()
            assert "history store not ready (retrying" in log
            assert said in log
            assert "secret-pw" not in log, "the password is never printed"
        finally:
            operator.stop()
