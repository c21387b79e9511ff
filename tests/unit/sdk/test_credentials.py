"""The bearer token a `SchedulerClient` sends: a literal, a rotated file, the environment."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from worker_runtime.client import SchedulerClient
from worker_runtime.credentials import StaticToken, TokenFile, token_from_env


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rotate(path: Path, token: str) -> None:
    """As the kubelet does: write a new file and swap it in."""
    fresh = path.with_suffix(".new")
    fresh.write_text(token + "\n")
    os.replace(fresh, path)


def test_a_token_file_is_read_again_when_the_kubelet_rotates_it(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    clock = Clock()
    source = TokenFile(path, clock=clock)
    assert source.current() == "first"
    rotate(path, "second")
    assert source.current() == "first", "looked at no more than once a second"
    clock.now += 1.5
    assert source.current() == "second"
    path.unlink()
    clock.now += 1.5
    assert source.current() == "second", "a file that cannot be read keeps the last token"


def test_the_environment_names_a_token_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    monkeypatch.delenv("TETHER_TOKEN_FILE", raising=False)
    assert token_from_env() is None
    path = tmp_path / "token"
    path.write_text("from-file")
    monkeypatch.setenv("TETHER_TOKEN_FILE", str(path))
    file_source = token_from_env()
    assert isinstance(file_source, TokenFile)
    assert file_source.current() == "from-file"
    monkeypatch.setenv("TETHER_TOKEN", "literal")
    literal = token_from_env()
    assert isinstance(literal, StaticToken)
    assert literal.current() == "literal"


async def test_every_request_carries_the_current_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"workers": []})

    path = tmp_path / "token"
    path.write_text("pod-token")
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    monkeypatch.setenv("TETHER_TOKEN_FILE", str(path))
    async with SchedulerClient("http://sched", transport=httpx.MockTransport(handle)) as client:
        await client.list_workers()
        await client.heartbeat("w1")
    async with SchedulerClient(
        "http://sched", transport=httpx.MockTransport(handle), token="given"
    ) as client:
        await client.list_workers()
    monkeypatch.delenv("TETHER_TOKEN_FILE")
    async with SchedulerClient("http://sched", transport=httpx.MockTransport(handle)) as client:
        await client.list_workers()
    assert seen == ["Bearer pod-token", "Bearer pod-token", "Bearer given", None]
