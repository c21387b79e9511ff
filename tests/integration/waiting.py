"""Waiting for a condition in end-to-end tests, with a clear failure when it never holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


async def until(condition: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Poll `condition` every 10 ms; fail the test if it is still false after `within` s."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what or condition}")
        await asyncio.sleep(0.01)
