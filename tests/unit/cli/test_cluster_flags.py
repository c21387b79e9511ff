"""The CLI against a cluster: a namespace as kubectl takes it, a token anywhere and
never echoed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.cli.conftest import FakeScheduler, Result, make_run, ok, problem
from tether_operator.cli import run_command

Cli = Callable[..., Result]


def started_namespace(fake: FakeScheduler) -> str | None:
    (post,) = [r for r in fake.requests if r.method == "POST"]
    value = json.loads(post.content).get("namespace")
    return str(value) if value is not None else None


@pytest.mark.parametrize(
    "argv",
    [
        ("-n", "team-a", "run", "wf"),
        ("run", "wf", "-n", "team-a"),
        ("run", "--namespace=team-a", "wf"),
    ],
)
def test_run_starts_in_the_namespace_given(
    cli: Cli, fake: FakeScheduler, argv: tuple[str, ...]
) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Pending"), 201)
    assert cli(*argv).code == 0
    assert started_namespace(fake) == "team-a"


def test_the_namespace_defaults_to_the_kubeconfigs_then_the_environment(
    cli: Cli, fake: FakeScheduler, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake.routes["POST", "/v1/runs"] = ok(make_run("Pending"), 201)
    cli("run", "wf")
    assert started_namespace(fake) is None, "no kubeconfig: the server decides"
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, namespace: ml}\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    fake.requests.clear()
    cli("run", "wf")
    assert started_namespace(fake) == "ml"
    monkeypatch.setenv("TETHER_NAMESPACE", "ops")
    fake.requests.clear()
    cli("run", "wf")
    assert started_namespace(fake) == "ops"


def test_a_run_is_found_by_its_name_in_the_namespace(cli: Cli, fake: FakeScheduler) -> None:
    run = make_run("Running").model_copy(update={"run_id": "team-a.nightly"})
    fake.routes["GET", "/v1/runs/team-a.nightly"] = ok(run)
    result = cli("describe", "run", "nightly", "-n", "team-a")
    assert result.code == 0, result.err
    assert [r.url.path for r in fake.requests] == ["/v1/runs/nightly", "/v1/runs/team-a.nightly"]
    # A name alone is a run of the operator's namespace to the server: 403 there.
    fake.routes["GET", "/v1/runs/other"] = problem(403, "Forbidden", "may not get workflowruns")
    other = make_run("Running").model_copy(update={"run_id": "team-a.other"})
    fake.routes["GET", "/v1/runs/team-a.other"] = ok(other)
    assert cli("get", "run", "other", "-n", "team-a").code == 0
    missing = cli("get", "run", "nope", "-n", "team-a")
    assert missing.code == 1
    assert "no route GET /v1/runs/nope" in missing.err, "the error names what was asked"


def test_the_token_is_taken_after_the_subcommand(cli: Cli, fake: FakeScheduler) -> None:
    fake.routes["GET", "/v1/runs/run-1"] = ok(make_run("Running"))
    assert cli("get", "run", "run-1", "--token", "s3cret").code == 0
    assert fake.requests[-1].headers["authorization"] == "Bearer s3cret"


def test_a_usage_error_never_prints_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        # `dev` takes no token: argparse lists it among the unrecognized arguments.
        run_command(["dev", "flows.py", "--token", "s3cret", "--token=t0ken"])
    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert "t0ken" not in err
    assert "unrecognized arguments: --token <redacted> --token=<redacted>" in err
