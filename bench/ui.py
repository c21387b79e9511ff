"""What the run page costs with a large run: a run of `--activities` (1,000) activities.

    python -m bench.ui [--activities 1000] [--rounds 50] [--loads 5]

The scheduler (in-process, real SDK workers) serves the page on a loopback port
(`tests.browser.served`, as the UI tests do) and Debian's chromium (Playwright) opens
it. Measured, medians:
- the run view's size, and the scheduler's time for `GET /v1/runs/{id}`: a changed
  answer (200, the whole view) and an unchanged one (304, what a live page gets
  while nothing happens);
- the browser: from navigation to every bar drawn, and one redraw of the page (what
  a live page does each time the run changes), and the JS heap after it.
Results: bench/results/ui.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import time
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

import worker_runtime as workflows
from tests.browser import served
from worker_runtime import activity
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

RESULTS = Path(__file__).resolve().parent / "results"


@activity()
async def item(i: int) -> int:
    return i


@workflows.workflow.define(name="bench-ui-many")
class Many:
    @entrypoint
    async def run(self, count: int) -> int:
        for start in range(0, count, 100):
            await asyncio.gather(*(item(i) for i in range(start, min(count, start + 100))))
        return count


async def timed_gets(url: str, rounds: int, etag: str | None) -> list[float]:
    """Seconds per GET of `url` (sent with `If-None-Match: etag` when given)."""
    headers = {"If-None-Match": etag} if etag else {}
    took = []
    async with httpx.AsyncClient() as client:
        for _ in range(rounds):
            start = time.perf_counter()
            answer = await client.get(url, headers=headers)
            took.append(time.perf_counter() - start)
            assert answer.status_code == (304 if etag else 200), answer.status_code
    return took


async def measure(activities: int, rounds: int, loads: int) -> dict[str, float]:
    async with WorkflowEnvironment([Many], [item], workers=3) as env:
        run_id = await env.start(Many, {"count": activities})
        assert (await env.client.wait_run(run_id, 300)).phase == "Succeeded"
        async with served(env.app) as base:
            run_url = f"{base}/v1/runs/{run_id}"
            async with httpx.AsyncClient() as client:
                first = await client.get(run_url)
            full = await timed_gets(run_url, rounds, None)
            unchanged = await timed_gets(run_url, rounds, first.headers["etag"])
            figures = {
                "view_kib": len(first.content) / 1024,
                "get_200_ms": statistics.median(full) * 1000,
                "get_304_ms": statistics.median(unchanged) * 1000,
            }
            figures |= await browse(f"{base}/ui/#/runs/{run_id}", run_url, activities, loads)
    return figures


async def browse(page_url: str, run_url: str, activities: int, loads: int) -> dict[str, float]:
    chromium = shutil.which("chromium") or "chromium"
    drawn, redraw, heap = [], [], []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = await browser.new_page(viewport={"width": 1280, "height": 900})
        for _ in range(loads):
            await tab.goto("about:blank")
            start = time.perf_counter()
            await tab.goto(page_url)
            await tab.wait_for_function(
                f"() => document.querySelectorAll('svg.gantt g[data-seq]').length === {activities}"
            )
            drawn.append(time.perf_counter() - start)
            took = await tab.evaluate(
                """async (url) => {
                  const run = await (await fetch(url)).json();
                  const start = performance.now();
                  renderRun(run);
                  document.body.getBoundingClientRect();  // layout included
                  return performance.now() - start;
                }""",
                run_url,
            )
            redraw.append(float(took))
            heap.append(float(await tab.evaluate("() => performance.memory.usedJSHeapSize")))
        await browser.close()
    return {
        "load_to_drawn_ms": statistics.median(drawn) * 1000,
        "redraw_ms": statistics.median(redraw),
        "heap_mib": statistics.median(heap) / 2**20,
    }


def report(activities: int, figures: dict[str, float]) -> str:
    return f"""# The run page with {activities:,} activities

`python -m bench.ui` on {platform.node()} ({time.strftime("%Y-%m-%d")}), medians.

| what | value |
| --- | --- |
| the run's view (`GET /v1/runs/{{id}}`) | {figures["view_kib"]:.0f} KiB |
| scheduler, a changed answer (200) | {figures["get_200_ms"]:.1f} ms |
| scheduler, unchanged (304: a live page's poll, nothing new) | {figures["get_304_ms"]:.1f} ms |
| browser, navigation to all {activities:,} bars drawn | {figures["load_to_drawn_ms"]:.0f} ms |
| browser, one redraw (a live page, each time the run changes) | {figures["redraw_ms"]:.0f} ms |
| browser, JS heap after drawing | {figures["heap_mib"]:.1f} MiB |

A live page polls once a second. For a run the engine holds, the 304 comes from the
run's version (its history's length and its children's) without building the view, so
a page open on a quiet {activities:,}-activity run costs the scheduler about
{figures["get_304_ms"]:.1f} ms a second (the HTTP round trip included) and nothing in
the browser; each change costs one view ({figures["get_200_ms"]:.1f} ms) and one redraw.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "ui.md")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.activities, args.rounds, args.loads))
    text = report(args.activities, figures)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
