"""A real browser for the UI tests: Debian's chromium driven by Playwright (async API),
and the scheduler's app served on a loopback TCP port so the browser can reach it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from tether_operator.scheduler.server import http_config

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium() -> str:
    """The path of Debian's chromium; the test fails, naming the fix, without it."""
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    pytest.fail("the UI tests need Debian's chromium: apt-get install chromium (hack/install-deps)")


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    """A headless chromium (no sandbox: CI runs as root)."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def page(url: str) -> AsyncIterator[Page]:
    """A browser tab at `url`, 1280 by 900; page errors fail the test when it ends."""
    errors: list[str] = []
    async with browser() as b:
        tab = await b.new_page(viewport={"width": 1280, "height": 900})
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        await tab.goto(url)
        yield tab
    assert not errors, f"the page threw: {errors}"


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve the ASGI `app` on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(http_config(app, "127.0.0.1", port))  # as the scheduler serves
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def attribute_values(tab: Page, selector: str, attribute: str) -> list[str]:
    """`attribute` of every element matching `selector`, in document order."""
    values = await tab.eval_on_selector_all(
        selector, f"(els) => els.map((e) => e.getAttribute({attribute!r}))"
    )
    return [str(v) for v in values]
