"""The console's actions in a real browser (Debian's chromium, Playwright): the Start-run
form generated from a workflow's input schema (checked in the browser, and again by the
server), and a schedule's trigger, suspend and resume buttons; RBAC refusals shown as
the API words them. Real scheduler and SDK workers in-process, as test_ui_browser.py."""

from __future__ import annotations

from typing import Literal

import pytest

import worker_runtime as workflows
from tests.browser import attribute_values, page, served
from tests.tokens import Tokens
from tether_operator.dev.schedules import CodeSchedules
from tether_operator.scheduler import create_app
from tether_operator.scheduler.auth import Gate
from worker_runtime import activity
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(120)]


@activity()
async def echo(value: dict[str, object]) -> dict[str, object]:
    return value


@workflows.workflow.define(name="ui-start")
class UiStart:
    @entrypoint
    async def run(
        self,
        region: str,
        count: int = 2,
        dry_run: bool = False,
        mode: Literal["fast", "slow"] = "fast",
        ids: list[int] | None = None,
    ) -> dict[str, object]:
        value = {"region": region, "count": count, "dry_run": dry_run, "mode": mode, "ids": ids}
        return await echo(value)


@workflows.workflow.define(name="ui-tick", schedule="0 0 1 1 *")
class UiTick:
    @entrypoint
    async def run(self) -> str:
        return "tick"


WORKFLOWS = [UiStart, UiTick]


async def test_the_start_run_form_follows_the_schema_and_both_sides_check_the_input() -> None:
    async with WorkflowEnvironment(WORKFLOWS, [echo]) as env:
        async with (
            served(env.app) as url,
            page(f"{url}/ui/#/workflows/{env.service.namespace}/ui-start") as tab,
        ):
            await tab.wait_for_selector("#startform")
            kinds = await attribute_values(tab, "#startform [data-kind]", "data-kind")
            names = await attribute_values(tab, "#startform [data-kind]", "name")
            assert dict(zip(names, kinds, strict=True)) == {
                "region": "string",
                "count": "integer",
                "dry_run": "boolean",
                "mode": "enum",
                "ids": "json",
            }
            assert await tab.input_value("#field-count") == "2", "the default is filled in"

            # The browser refuses a missing required field and JSON that does not parse.
            await tab.click("#startform button[type=submit]")
            assert not await tab.evaluate(
                "() => document.getElementById('field-region').validity.valid"
            )
            await tab.fill("#field-region", "eu")
            await tab.fill("#field-ids", "[1, 2")
            assert not await tab.evaluate(
                "() => document.getElementById('startform').checkValidity()"
            )

            # What only the server can check (each id an integer) comes back naming the field.
            await tab.fill("#field-ids", '["x"]')
            await tab.click("#startform button[type=submit]")
            error = await tab.wait_for_selector("[data-form-error]:not([hidden])")
            assert error is not None
            text = await error.inner_text()
            assert text.startswith("input.ids")
            assert env.service.list_runs() == []

            await tab.fill("#field-ids", "[3, 4]")
            await tab.fill("#field-count", "5")
            await tab.check("#field-dry_run")
            await tab.select_option("#field-mode", "slow")
            await tab.click("#startform button[type=submit]")
            await tab.wait_for_function("() => location.hash.startsWith('#/runs/')")
            run_id = await tab.evaluate("() => decodeURIComponent(location.hash.slice(7))")
            await tab.wait_for_selector(f"h1[data-run-id='{run_id}']")
        view = await env.client.wait_run(run_id, 30)
        assert view.input == {
            "region": "eu",
            "count": 5,
            "dry_run": True,
            "mode": "slow",
            "ids": [3, 4],
        }
        assert view.phase == "Succeeded"


async def test_a_schedule_is_triggered_suspended_and_resumed_from_its_row() -> None:
    async with WorkflowEnvironment(WORKFLOWS, [echo], workers=0) as env:
        env.service.use_schedules(CodeSchedules(env.service))
        await env.add_worker("w1", workflows=WORKFLOWS, activities=[echo])
        async with served(env.app) as url, page(f"{url}/ui/#/schedules") as tab:
            await tab.wait_for_selector("tr[data-schedule=ui-tick][data-suspended=false]")
            await tab.click("tr[data-schedule=ui-tick] button[data-action=trigger]")
            notice = await tab.wait_for_selector("[data-notice=triggered] a")
            assert notice is not None
            run_id = await notice.inner_text()
            assert run_id.startswith("ui-tick-t")
            assert (await env.client.wait_run(run_id, 30)).result == "tick"

            await tab.click("tr[data-schedule=ui-tick] button[data-action=suspend]")
            await tab.wait_for_selector("tr[data-schedule=ui-tick][data-suspended=true]")
            await tab.wait_for_selector("[data-notice=suspend]")
            await tab.click("tr[data-schedule=ui-tick] button[data-action=resume]")
            await tab.wait_for_selector("tr[data-schedule=ui-tick][data-suspended=false]")
            await tab.click(f"tr[data-schedule=ui-tick] a[href='#/runs/{run_id}']")
            await tab.wait_for_selector(f"h1[data-run-id='{run_id}']")


async def test_without_the_rights_the_buttons_and_the_form_show_the_refusal() -> None:
    async with WorkflowEnvironment(WORKFLOWS, [echo], workers=0) as env:
        ns = env.service.namespace
        viewer = {
            ("list", "workflowschedules", ns),
            ("list", "workflowruns", ns),
            ("get", "workflowruns", ns),
            ("list", "workflows", ns),
        }
        tokens = Tokens({"viewer": viewer})
        env.service.use_schedules(CodeSchedules(env.service))
        await env.add_worker("w1", workflows=WORKFLOWS, activities=[echo])
        gated = create_app(
            env.service,
            manage_lifecycle=False,
            gate=Gate(tokens, run_namespace=lambda _: ns),
        )
        async with served(gated) as url, page(f"{url}/ui/#token=viewer&to=/schedules") as tab:
            await tab.wait_for_selector("tr[data-schedule=ui-tick]")
            await tab.click("tr[data-schedule=ui-tick] button[data-action=trigger]")
            refused = await tab.wait_for_selector("[data-notice=refused][data-status='403']")
            assert refused is not None
            assert (
                f"may not patch workflowschedules in namespace {ns!r}" in await refused.inner_text()
            )

            await tab.goto(f"{url}/ui/#/workflows/{ns}/ui-start")
            await tab.fill("#field-region", "eu")
            await tab.click("#startform button[type=submit]")
            error = await tab.wait_for_selector("[data-form-error][data-status='403']")
            assert error is not None
            assert "may not create workflowruns" in await error.inner_text()
        assert env.service.list_runs() == []
