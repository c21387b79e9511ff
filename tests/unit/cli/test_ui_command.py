"""`tether ui`: the page's address, a run's page, the token handed over in the fragment."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from tether_operator.cli.output import Output, make_console
from tether_operator.cli.ui import page_url, serve_ui


def test_page_urls() -> None:
    assert page_url("http://127.0.0.1:7233") == "http://127.0.0.1:7233/ui/"
    assert page_url("http://h:1/", "ns.run-1") == "http://h:1/ui/#/runs/ns.run-1"
    assert page_url("http://h:1", "a/b") == "http://h:1/ui/#/runs/a%2Fb"
    assert page_url("http://h:1", token="t+k/=") == "http://h:1/ui/#token=t%2Bk%2F%3D"
    assert page_url("http://h:1", "a/b", "t") == "http://h:1/ui/#token=t&to=/runs/a%252Fb"


def test_it_opens_the_page_with_the_token_and_prints_it_without() -> None:
    out = io.StringIO()
    opened: list[str] = []

    def opener(url: str) -> bool:
        opened.append(url)
        return True

    code = serve_ui(
        "http://127.0.0.1:7233",
        Output(out=make_console(out), err=make_console(io.StringIO())),
        run_id="r1",
        token="secret",
        opener=opener,
    )
    assert code == 0
    assert opened == ["http://127.0.0.1:7233/ui/#token=secret&to=/runs/r1"]
    assert "http://127.0.0.1:7233/ui/#/runs/r1" in out.getvalue()
    assert "secret" not in out.getvalue()


def test_without_a_browser_it_says_to_open_the_address(cli: Callable[..., Any]) -> None:
    result = cli("ui", "--no-open")
    assert result.code == 0
    assert result.out.strip() == "Tether run page: http://127.0.0.1:7233/ui/"


def test_a_headless_machine_is_told_what_to_do() -> None:
    out = io.StringIO()
    code = serve_ui(
        "http://h:1",
        Output(out=make_console(out), err=make_console(io.StringIO())),
        opener=lambda _url: False,
    )
    assert code == 0
    assert "No browser could be opened here: open the address above." in out.getvalue()
