"""`tether run/get/describe/cancel/history` against a fake scheduler (httpx.MockTransport)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.cli.conftest import FakeScheduler, Result, make_run, make_worker, ok, problem
from worker_runtime.protocol import History, HistoryEventModel, RunList, RunView, WorkerList

Cli = Callable[..., Result]


def test_unreachable_scheduler_is_one_line(cli: Cli) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import io

    from tether_operator.cli import run_command
    from tether_operator.cli.output import Output, make_console

    out, err = io.StringIO(), io.StringIO()
    code = run_command(
        ["--server", f"http://127.0.0.1:{port}", "get", "runs"],
        output=Output(out=make_console(out), err=make_console(err)),
    )
    assert code == 1
    assert err.getvalue() == (
        f"error: cannot reach the Tether scheduler at http://127.0.0.1:{port}"
        " — is `tether dev FILE` running?\n"
    )
    assert out.getvalue() == ""


def test_invalid_input_json_is_rejected_before_any_request(cli: Cli, fake: FakeScheduler) -> None:
    result = cli("run", "ml-inference", "--input", "{batch: 1}")
    assert result.code == 1
    assert result.err.startswith("error: --input is not valid JSON: Expecting property name")
    assert result.err.count("\n") == 1
    assert fake.requests == []


def test_input_file_is_read(cli: Cli, fake: FakeScheduler, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"batch": [{"x": 1}]}')
    fake.routes["POST", "/v1/runs"] = ok(make_run("Pending"), 201)
    assert cli("run", "ml-inference", "--input-file", str(path)).code == 0
    assert json.loads(fake.requests[0].content)["input"] == {"batch": [{"x": 1}]}


def test_missing_input_file_is_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli("run", "ml-inference", "--input-file", str(tmp_path / "nope.json"))
    assert result.code == 1
    assert result.err.startswith("error: cannot read --input-file")


def test_invalid_run_id_is_named_by_its_flag(cli: Cli, fake: FakeScheduler) -> None:
    result = cli("run", "ml-inference", "--id", "Not_Valid")
    assert result.code == 1
    assert result.err.startswith("error: invalid --id: String should match pattern")
    assert fake.requests == []


def test_run_sends_the_start_request(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Pending"), 201)
    result = cli(
        "run",
        "ml-inference",
        "--input",
        '{"batch": []}',
        "--id",
        "run-1",
        "--sticky",
        "hard",
        "--schedule-timeout",
        "30",
    )
    assert result.code == 0
    assert "run/run-1 created" in result.out
    body = json.loads(fake.requests[0].content)
    assert body == {
        "workflow": "ml-inference",
        "input": {"batch": []},
        "run_id": "run-1",
        "sticky": "HARD",
        "schedule_timeout": 30.0,
    }


def test_run_wait_json_prints_only_the_final_view(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Pending"), 201)
    fake.routes["GET", "/v1/runs/run-1/wait"] = [ok(make_run("Running")), ok(make_run("Succeeded"))]
    result = cli("run", "ml-inference", "--wait", "-o", "json")
    assert result.code == 0
    view = RunView.model_validate(result.json())
    assert view.phase == "Succeeded"
    assert view.result == [{"y": 2}, {"y": 4}]
    waits = [r for r in fake.requests if r.url.path.endswith("/wait")]
    assert len(waits) == 2
    assert all(float(r.url.params["timeout"]) > 0 for r in waits)


def test_run_wait_table_shows_phase_result_and_duration(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Running"), 201)
    fake.routes["GET", "/v1/runs/run-1/wait"] = ok(make_run("Succeeded"))
    result = cli("run", "ml-inference", "--wait")
    assert result.code == 0
    assert "Phase:" in result.out
    assert "Succeeded" in result.out
    assert '[{"y":2},{"y":4}]' in result.out
    assert "Duration:" in result.out
    assert "2.5s" in result.out


@pytest.mark.parametrize("phase", ["Failed", "Cancelled"])
def test_run_wait_exits_1_when_the_run_does_not_succeed(
    cli: Cli, fake: FakeScheduler, phase: str
) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Running"), 201)
    fake.routes["GET", "/v1/runs/run-1/wait"] = ok(make_run(phase))
    result = cli("run", "ml-inference", "--wait")
    assert result.code == 1
    assert phase in result.out


def test_run_wait_timeout_is_an_error(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Running"), 201)
    fake.routes["GET", "/v1/runs/run-1/wait"] = ok(make_run("Running"))
    result = cli("run", "ml-inference", "--wait", "--timeout", "0.2")
    assert result.code == 1
    assert "did not finish within 0.2s (phase Running)" in result.err


def test_problem_bodies_become_one_line(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs/abc"] = problem(404, "RunNotFound", 'run "abc" not found')
    result = cli("get", "run", "abc")
    assert (result.code, result.err) == (1, 'error: run "abc" not found\n')

    fake.routes["POST", "/v1/runs"] = problem(
        409, "RunAlreadyExists", 'run "run-1" already exists', "run_id"
    )
    result = cli("run", "ml-inference", "--id", "run-1")
    assert (result.code, result.err) == (1, 'error: run "run-1" already exists (field: run_id)\n')


def test_non_problem_error_bodies_are_summarised(cli: Cli, fake: FakeScheduler) -> None:
    import httpx

    fake.routes["GET", "/v1/runs"] = httpx.Response(502, text="Bad Gateway")
    result = cli("get", "runs")
    assert (result.code, result.err) == (1, "error: the scheduler answered HTTP 502: Bad Gateway\n")


def test_get_runs_table(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs"] = ok(
        RunList(runs=[make_run("Running"), make_run("Succeeded", run_id="run-2")])
    )
    result = cli("get", "runs")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "WORKFLOW", "PHASE", "STICKY-WORKER", "PROGRESS", "AGE"]
    assert lines[1].split() == ["run-1", "ml-inference", "Running", "dev-worker-4", "2/3", "30s"]
    assert lines[2].split()[:5] == ["run-2", "ml-inference", "Succeeded", "dev-worker-4", "3/3"]


def test_get_runs_wide_and_json(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs"] = ok(RunList(runs=[make_run("Succeeded")]))
    wide = cli("get", "runs", "-o", "wide")
    assert wide.out.splitlines()[0].split() == [
        "NAME",
        "WORKFLOW",
        "PHASE",
        "STICKY-WORKER",
        "PROGRESS",
        "AGE",
        "STRATEGY",
        "WORKFLOW-WORKER",
        "SESSIONS",
        "DURATION",
        "PARENT",
    ]
    assert "SOFT" in wide.out
    assert "DURATION" in wide.out
    as_json = cli("get", "runs", "-o", "json")
    assert RunList.model_validate(as_json.json()).runs[0].run_id == "run-1"


def test_get_runs_empty(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs"] = ok(RunList(runs=[]))
    result = cli("get", "runs")
    assert (result.code, result.out, result.err) == (0, "", "No runs found.\n")


def test_get_workers(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/workers"] = ok(
        WorkerList(workers=[make_worker(1), make_worker(2, alive=False)])
    )
    result = cli("get", "workers")
    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "NODE", "STATUS", "RUNNING"]
    assert lines[1].split()[:5] == ["dev-worker-1", "dev-node-a", "Ready", "1/8", "1/4"]
    assert lines[2].split()[:3] == ["dev-worker-2", "dev-node-b", "Lost"]
    assert lines[2].split()[-1] == "ProcessExited"
    assert WorkerList.model_validate(cli("get", "workers", "-o", "json").json()).workers


def test_describe_run(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs/run-1"] = ok(make_run("Failed"))
    result = cli("describe", "run", "run-1")
    assert result.code == 0
    out = result.out
    assert "Phase:" in out
    assert "Failed" in out
    assert "SessionBroken: session worker lost [SessionBroken]" in out
    assert "Activities:" in out
    assert "COLD START" in out
    assert "load_model" in out
    assert "Sessions:" in out
    assert "dev-worker-2 -> dev-worker-4" in out
    assert "ProcessExited: dev-worker-2 (pid 42) killed by SIGKILL" in out
    assert "Children:" in out
    described = cli("describe", "run", "run-1", "-o", "json")
    assert RunView.model_validate(described.json()).phase == "Failed"


def test_cancel_run(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs/run-1"] = ok(make_run("Running"))
    fake.routes["POST", "/v1/runs/run-1/cancel"] = ok(make_run("Cancelled"))
    result = cli("cancel", "run", "run-1")
    assert (result.code, result.out) == (0, "run/run-1 cancel requested (phase Cancelled)\n")


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
def test_cancel_of_a_finished_run_says_so(cli: Cli, fake: FakeScheduler, phase: str) -> None:
    fake.routes["GET", "/v1/runs/run-1"] = ok(make_run(phase))
    result = cli("cancel", "runs", "run-1")
    assert (result.code, result.out) == (
        0,
        f"run/run-1 already finished (phase {phase}); nothing to cancel\n",
    )
    assert [r.method for r in fake.requests] == ["GET"]  # no cancel was sent


def test_cancel_of_a_run_that_finishes_meanwhile_says_so(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs/run-1"] = ok(make_run("Running"))
    fake.routes["POST", "/v1/runs/run-1/cancel"] = ok(make_run("Succeeded"))
    result = cli("cancel", "run", "run-1")
    assert result.out == "run/run-1 already finished (phase Succeeded); nothing to cancel\n"


def test_history_run(cli: Cli, fake: FakeScheduler) -> None:
    events = [
        HistoryEventModel(type="RunStarted", time=100.0, data={"workflow": "ml-inference"}),
        HistoryEventModel(type="SessionBroken", time=101.25, data={"reason": "ProcessExited"}),
    ]
    fake.routes["GET", "/v1/runs/run-1/history"] = ok(History(run_id="run-1", events=events))
    result = cli("history", "run", "run-1")
    lines = result.out.splitlines()
    assert lines[0].split() == ["#", "TIME", "TYPE", "DETAILS"]
    assert lines[2].split()[:3] == ["2", "+1.250s", "SessionBroken"]
    assert (
        History.model_validate(cli("history", "run", "run-1", "-o", "json").json()).events == events
    )


def test_server_flag_is_used(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs"] = ok(RunList(runs=[]))
    cli("--server", "http://scheduler.example:9000/", "get", "runs")
    assert str(fake.requests[0].url) == "http://scheduler.example:9000/v1/runs"


def test_a_token_is_sent_as_a_bearer_token(
    cli: Cli, fake: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.routes["GET", "/v1/runs"] = ok(RunList(runs=[]))
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    cli("get", "runs")
    cli("--token", "abc", "get", "runs")
    monkeypatch.setenv("TETHER_TOKEN", "from-env")
    cli("get", "runs")
    sent = [r.headers.get("authorization") for r in fake.requests]
    assert sent == [None, "Bearer abc", "Bearer from-env"]


def test_a_refused_token_is_one_line_saying_what_to_do(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs"] = problem(
        401, "Unauthenticated", "this scheduler needs a bearer token: ... `tether --token`"
    )
    result = cli("get", "runs")
    assert result.code == 1
    assert result.err.strip() == (
        "error: this scheduler needs a bearer token: ... `tether --token`"
    )


def test_wait_run_follows_an_existing_run(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs/run-1"] = ok(make_run("Running"))
    fake.routes["GET", "/v1/runs/run-1/wait"] = ok(make_run("Failed"))
    result = cli("wait", "run", "run-1", "-o", "json")
    assert result.code == 1
    assert RunView.model_validate(result.json()).phase == "Failed"


def test_run_wait_shows_live_progress_on_a_terminal(fake: FakeScheduler) -> None:
    import io

    from rich.console import Console

    from tether_operator.cli import run_command
    from tether_operator.cli.output import Output, make_console

    fake.routes["POST", "/v1/runs"] = ok(make_run("Pending"), 201)
    fake.routes["GET", "/v1/runs/run-1/wait"] = [ok(make_run("Running")), ok(make_run("Succeeded"))]
    out, err = io.StringIO(), io.StringIO()
    terminal = Console(file=err, force_terminal=True, width=160)
    output = Output(out=make_console(out), err=terminal)
    assert (
        run_command(["run", "ml-inference", "--wait"], output=output, transport=fake.transport) == 0
    )
    assert "steps done 2/3" in err.getvalue()
    assert "Succeeded" in out.getvalue()


def test_waiting_piped_shows_no_progress(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Pending"), 201)
    fake.routes["GET", "/v1/runs/run-1/wait"] = [ok(make_run("Running")), ok(make_run("Succeeded"))]
    result = cli("run", "ml-inference", "--wait")
    assert result.code == 0
    assert result.err == ""
    assert "steps done" not in result.out
    fake.routes["GET", "/v1/runs/run-1"] = ok(make_run("Running"))
    fake.routes["GET", "/v1/runs/run-1/wait"] = [ok(make_run("Running")), ok(make_run("Succeeded"))]
    waited = cli("wait", "run", "run-1")
    assert (waited.code, waited.err) == (0, "")
