"""`--server kube`: a call that finds a standby (503) or no server follows the leader to
its new address and is sent again; a request that may have reached the old one is not."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.cli.conftest import make_run, ok, problem
from tether_operator.cli.client import CliError, SchedulerClient


class Servers:
    """Hosts by name: `old` (gone, or a standby) and `new` (the leader)."""

    def __init__(self, old: str) -> None:
        self.old = old
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.host}")
        if request.url.host == "old":
            if self.old == "gone":
                raise httpx.ConnectError("connection refused", request=request)
            if self.old == "cut":
                raise httpx.ReadError("connection reset", request=request)
            return problem(503, "ServiceUnavailable", "not serving: a standby")
        if request.method == "POST":
            return ok(make_run("Pending"), 201)
        return ok(make_run("Running"))


def client(servers: Servers, moves: list[str]) -> SchedulerClient:
    def follow() -> str:
        moves.append("new")
        return "http://new:7233"

    return SchedulerClient("http://old:7233", transport=httpx.MockTransport(servers), follow=follow)


@pytest.mark.parametrize("old", ["gone", "standby"])
def test_a_call_follows_the_leader_to_its_new_address(old: str) -> None:
    servers, moves = Servers(old), []
    with client(servers, moves) as c:
        assert c.get_run("run-1").phase == "Running"
        assert c.server == "http://new:7233"
    assert servers.seen == ["GET old", "GET new"]
    assert moves == ["new"]


def test_a_start_is_sent_again_only_if_it_never_left() -> None:
    servers, moves = Servers("gone"), []
    from worker_runtime.protocol import StartRunRequest

    with client(servers, moves) as c:
        assert c.start_run(StartRunRequest(workflow="wf")).phase == "Pending"
    servers, moves = Servers("cut"), []
    with client(servers, moves) as c, pytest.raises(CliError, match="cannot talk"):
        c.start_run(StartRunRequest(workflow="wf"))  # it may have started: not twice
    assert moves == []


def test_without_follow_an_unreachable_server_is_one_error() -> None:
    c = SchedulerClient("http://old:7233", transport=httpx.MockTransport(Servers("gone")))
    with pytest.raises(CliError, match="cannot reach the Tether scheduler at http://old:7233"):
        c.get_run("run-1")
