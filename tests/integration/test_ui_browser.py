"""The run timeline page in a real browser (Debian's chromium, Playwright), against the
real scheduler and SDK workers in-process, served on a loopback port.

A run's page draws each attempt on its pod's lane; a session's break and its rebind
appear while the page is open, without a reload; retries and their errors show; the
empty states say what to do; a scheduler that checks tokens refuses a caller without
one (401, with a form) and one without rights (403, naming what to grant); a run of
1,000 activities draws all of them. The same page on Kubernetes, with a deleted pod
and TokenReview, is tests/e2e/test_ui_k8s.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page

import worker_runtime as workflows
from tests.browser import attribute_values, page, served
from tests.tokens import Tokens
from tether_operator.cli.ui import page_url
from tether_operator.scheduler import create_app
from tether_operator.scheduler.auth import Gate
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

from .waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(120)]

HELD: dict[str, asyncio.Event] = {}
"""Per-test gates the `held` activity waits on (made on the test's loop)."""
TRIES: dict[str, int] = {}


@activity()
async def step(key: str, i: int) -> str:
    return activity.info().worker_id


@activity()
async def held(key: str) -> str:
    await HELD[key].wait()
    return activity.info().worker_id


@activity(retry_policy_initial_interval=0.05)
async def flaky(key: str) -> int:
    TRIES[key] = TRIES.get(key, 0) + 1
    if TRIES[key] == 1:
        raise RuntimeError(f"{key}: the first attempt fails")
    return TRIES[key]


@workflows.workflow.define(name="ui-session")
class UiSession:
    @entrypoint
    async def run(self, key: str, hold: bool = False) -> list[str]:
        async with run_sticky_worker_session(strategy=StickyStrategy.SOFT):
            where = [await step(key, 0), await step(key, 1)]
            if hold:
                where.append(await held(key))
            where.append(await step(key, 2))
        # Outside the session: spread over whichever workers are free.
        where += await asyncio.gather(*(step(key, 10 + i) for i in range(6)))
        return where


@workflows.workflow.define(name="ui-flaky")
class UiFlaky:
    @entrypoint
    async def run(self, key: str) -> int:
        return await flaky(key)


@workflows.workflow.define(name="ui-many")
class UiMany:
    @entrypoint
    async def run(self, key: str, count: int) -> int:
        for start in range(0, count, 100):
            await asyncio.gather(*(step(key, i) for i in range(start, min(count, start + 100))))
        return count


@workflows.workflow.define(name="ui-parent")
class UiParent:
    @entrypoint
    async def run(self, key: str) -> int:
        return int(await workflows.workflow.execute_child(UiFlaky, {"key": key})) + 1


WORKFLOWS = [UiSession, UiFlaky, UiMany, UiParent]
ACTIVITIES = [step, held, flaky]


async def environment(env: WorkflowEnvironment) -> None:
    """A workflow-only worker and three activity workers on two nodes."""
    await env.add_worker("wf", node="node-a", workflows=WORKFLOWS, activities=[])
    for name, node in (("pod-a1", "node-a"), ("pod-a2", "node-a"), ("pod-b1", "node-b")):
        await env.add_worker(name, node=node, workflows=[], activities=ACTIVITIES)


async def lanes_of_bars(tab: Page) -> list[list[Any]]:
    """[seq, attempt, its `data-pod`, the lane its bar is drawn in] for every bar."""
    found: list[list[Any]] = await tab.evaluate(
        """() => {
          const lanes = [...document.querySelectorAll('svg.gantt g[data-lane]')].map((g) => {
            const r = g.querySelector('rect');
            const y = Number(r.getAttribute('y'));
            return [g.dataset.lane, y, y + Number(r.getAttribute('height'))];
          });
          return [...document.querySelectorAll('svg.gantt g[data-seq]')].map((g) => {
            const y = Number(g.querySelector('rect.bar').getAttribute('y'));
            const lane = lanes.find(([, top, bottom]) => y >= top && y < bottom);
            return [Number(g.dataset.seq), Number(g.dataset.attempt), g.dataset.pod,
                    lane ? lane[0] : null];
          });
        }"""
    )
    return found


async def test_a_runs_page_draws_each_attempt_on_its_pods_lane() -> None:
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await environment(env)
        run_id = await env.start(UiSession, {"key": "lanes"})
        view = await env.client.wait_run(run_id, 30)
        assert view.phase == "Succeeded"
        async with served(env.app) as url, page(f"{url}/ui/#/runs/{run_id}") as tab:
            await tab.wait_for_selector("svg.gantt g[data-seq]")
            drawn = await lanes_of_bars(tab)
            want = sorted([a.seq, t.attempt, t.pod] for a in view.activities for t in a.attempts)
            assert sorted([seq, attempt, pod] for seq, attempt, pod, _ in drawn) == want
            for seq, attempt, pod, lane in drawn:
                assert lane == pod, f"seq {seq} attempt {attempt} ran on {pod}, drawn in {lane}"
            pods = {pod for _, _, pod, _ in drawn}
            assert len(pods) >= 2, f"the fan-out should use more than one pod: {pods}"
            # The session is drawn as its binding on the pod it ran on, cold start marked.
            (session,) = view.sessions
            bound = await attribute_values(tab, "svg.gantt [data-binding-pod]", "data-binding-pod")
            assert bound == [session.pod]
            assert await tab.locator("svg.gantt [data-cold]").count() >= 1
            assert await tab.locator("[data-phase=Succeeded]").first.is_visible()
            # The workflow's own pod has a lane, labelled so.
            lanes = await attribute_values(tab, "svg.gantt g[data-lane]", "data-lane")
            assert "wf" in lanes


async def test_a_broken_session_and_its_rebind_appear_without_a_reload() -> None:
    key = "rebind"
    HELD[key] = asyncio.Event()
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await environment(env)
        run_id = await env.start(UiSession, {"key": key, "hold": True})
        async with served(env.app) as url, page(f"{url}/ui/#/runs/{run_id}") as tab:
            running = await tab.wait_for_selector(
                "svg.gantt g[data-activity=held][data-state=Running]", timeout=15_000
            )
            assert running is not None
            first = await running.get_attribute("data-pod")
            assert first
            await tab.evaluate("() => { window.sameDocument = true; }")
            await env.kill_worker(first, "PodDeleted")
            await tab.wait_for_selector("svg.gantt [data-break-reason]", timeout=10_000)
            reasons = await attribute_values(
                tab, "svg.gantt [data-break-reason]", "data-break-reason"
            )
            assert reasons == ["PodDeleted"]
            assert await attribute_values(
                tab, "svg.gantt [data-break-reason]", "data-break-pod"
            ) == [first]
            # The session rebinds to another pod and the held step starts there again, cold.
            await tab.wait_for_selector(
                "svg.gantt g[data-activity=held][data-attempt='2'][data-state=Running] [data-cold]",
                timeout=15_000,
            )
            bound = await attribute_values(tab, "svg.gantt [data-binding-pod]", "data-binding-pod")
            assert len(bound) == 2
            assert bound[0] == first
            assert bound[1] != first
            await tab.wait_for_selector("[data-session] [data-break=PodDeleted]")
            HELD[key].set()
            await tab.wait_for_selector("h1 [data-phase=Succeeded]", timeout=15_000)
            assert await tab.evaluate("() => window.sameDocument === true"), "the page reloaded"
            assert await tab.locator("#live").is_hidden()


async def test_retries_and_their_errors_show() -> None:
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await environment(env)
        run_id = await env.start(UiFlaky, {"key": "retry"})
        assert (await env.client.wait_run(run_id, 30)).phase == "Succeeded"
        async with served(env.app) as url, page(f"{url}/ui/#/runs/{run_id}") as tab:
            await tab.wait_for_selector("svg.gantt g[data-seq]")
            states = await tab.evaluate(
                "() => [...document.querySelectorAll('svg.gantt g[data-seq]')]"
                ".map((g) => g.dataset.attempt + ':' + g.dataset.state)"
            )
            assert sorted(states) == ["1:Failed", "2:Completed"]
            error = tab.locator("[data-attempt-error]")
            assert await error.count() == 1
            assert "RuntimeError: retry: the first attempt fails" in await error.inner_text()
            assert await tab.locator("details[data-fold=input][open]").count() == 1
            assert "2" in await tab.locator("details[data-fold=result] pre").inner_text()


async def test_the_empty_pages_say_what_to_do() -> None:
    async with (
        WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env,
        served(env.app) as url,
        page(f"{url}/ui/") as tab,
    ):
        empty = await tab.wait_for_selector("[data-empty=runs]")
        assert empty is not None
        assert "tether run WORKFLOW" in await empty.inner_text()
        warning = await tab.wait_for_selector("[data-empty=no-workers]")
        assert warning is not None
        assert "no run can start" in await warning.inner_text()
        await tab.click("a[data-nav=workers]")
        workers = await tab.wait_for_selector("[data-empty=workers]")
        assert workers is not None
        assert "No workers have registered" in await workers.inner_text()
        # A worker registering turns up without a reload, with its slots.
        await env.add_worker("late", node="node-z", workflows=WORKFLOWS)
        row = await tab.wait_for_selector("tr[data-worker=late]", timeout=5_000)
        assert row is not None
        assert "0/8" in await row.inner_text()
        await tab.click("a[data-nav=runs]")
        await tab.wait_for_selector("[data-empty=runs]")
        assert await tab.locator("[data-empty=no-workers]").count() == 0


async def test_the_runs_list_filters_by_workflow_and_phase() -> None:
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await environment(env)
        done = await env.start(UiFlaky, {"key": "list"})
        await env.client.wait_run(done, 30)
        HELD["list"] = asyncio.Event()
        open_ = await env.start(UiSession, {"key": "list", "hold": True})
        await until(lambda: env.describe(open_).phase == "Running", what="the held run")
        async with served(env.app) as url, page(f"{url}/ui/#/runs") as tab:
            await tab.wait_for_selector("table[data-table=runs]")
            assert sorted(await attribute_values(tab, "tr[data-run]", "data-run")) == sorted(
                [done, open_]
            )
            await tab.select_option("select[name=phase]", "Running")
            await tab.wait_for_function("() => location.hash.includes('phase=Running')")
            await tab.wait_for_function(
                "() => document.querySelectorAll('tr[data-run]').length === 1"
            )
            assert await attribute_values(tab, "tr[data-run]", "data-run") == [open_]
            await tab.select_option("select[name=workflow]", "ui-flaky")
            await tab.wait_for_selector("[data-empty=filter]")
            await tab.goto(f"{url}/ui/#/runs?workflow=ui-flaky")
            await tab.wait_for_function(
                "() => document.querySelectorAll('tr[data-run]').length === 1"
            )
            assert await attribute_values(tab, "tr[data-run]", "data-run") == [done]
            await tab.click(f"tr[data-run='{done}'] a")
            await tab.wait_for_selector(f"h1[data-run-id='{done}']")
        HELD["list"].set()


async def test_a_caller_without_a_token_or_rights_gets_the_right_refusal() -> None:
    readers = {("get", "workflowruns", "dev"), ("list", "workflowruns", "dev")}
    tokens = Tokens({"reader": readers, "stranger": set()})
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await environment(env)
        run_id = await env.start(UiFlaky, {"key": "auth"})
        await env.client.wait_run(run_id, 30)
        gated = create_app(
            env.service, manage_lifecycle=False, gate=Gate(tokens, run_namespace=lambda _: "dev")
        )
        async with served(gated) as url:
            # No token: a 401 and a form that asks for one.
            async with page(f"{url}/ui/#/runs/{run_id}") as tab:
                form = await tab.wait_for_selector("[data-refusal='401']")
                assert form is not None
                assert "kubectl create token" in await form.inner_text()
                await tab.fill("#tokenform textarea", "reader")
                await tab.click("#tokenform button")
                await tab.wait_for_selector(f"h1[data-run-id='{run_id}']")
                assert await tab.locator("#signout").is_visible()
            # A known caller without rights: 403, saying what to grant.
            async with page(f"{url}/ui/#token=stranger") as tab:
                await tab.wait_for_function("() => location.hash === '#/runs'")
                await tab.wait_for_selector("[data-empty=runs]")  # it may list nothing
                await tab.goto(f"{url}/ui/#/runs/{run_id}")
                refusal = await tab.wait_for_selector("[data-refusal='403']")
                assert refusal is not None
                text = await refusal.inner_text()
                assert "user 'stranger' may not get workflowruns in namespace 'dev'" in text
                assert "Role" in text
                token = await tab.evaluate("() => sessionStorage.getItem('tether.token')")
                assert token == "stranger"
            # `tether ui RUN_ID --token T` opens the run's page with the token.
            async with page(page_url(url, run_id, "reader")) as tab:
                await tab.wait_for_selector(f"h1[data-run-id='{run_id}']")
                assert "token" not in tab.url


async def test_a_run_of_a_thousand_activities_draws_every_one() -> None:
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await environment(env)
        run_id = await env.start(UiMany, {"key": "many", "count": 1000})
        assert (await env.client.wait_run(run_id, 90)).phase == "Succeeded"
        async with served(env.app) as url, page(f"{url}/ui/#/runs/{run_id}") as tab:
            await tab.wait_for_selector("table[data-table=activities]", timeout=20_000)
            assert await tab.locator("svg.gantt g[data-seq]").count() == 1000
            assert await tab.locator("table[data-table=activities] tbody tr").count() == 1000
            await tab.click("a[data-nav=workers]")
            await tab.wait_for_selector("tr[data-worker=pod-b1]")


async def test_child_runs_are_linked_both_ways() -> None:
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await environment(env)
        parent = await env.start(UiParent, {"key": "child"})
        assert (await env.client.wait_run(parent, 30)).phase == "Succeeded"
        (child,) = env.describe(parent).children
        async with served(env.app) as url, page(f"{url}/ui/#/runs/{parent}") as tab:
            link = await tab.wait_for_selector("table[data-table=children] a")
            assert link is not None
            assert await link.inner_text() == child.run_id
            await link.click()
            await tab.wait_for_selector(f"h1[data-run-id='{child.run_id}']")
            await tab.click(f"dd a[href='#/runs/{parent}']")
            await tab.wait_for_selector(f"h1[data-run-id='{parent}']")
