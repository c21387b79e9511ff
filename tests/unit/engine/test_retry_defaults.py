"""A workflow's default retry policy (a Workflow's spec.retry) fills the retry fields an
activity's code did not set, in the workflow's own namespace only."""

from __future__ import annotations

from typing import Any

from .driver import Driver, act, open_session
from .test_restart import restarted

DEFAULTS = {"max_attempts": 2, "initial_interval": 0.5, "non_retryable_errors": ["KeyError"]}


def scheduled_retry(d: Driver, rid: str, seq: int) -> dict[str, Any]:
    (event,) = [
        e for e in d.stored[rid] if e["type"] == "ActivityScheduled" and e["data"]["seq"] == seq
    ]
    retry: dict[str, Any] = event["data"]["options"]["retry"]
    return retry


def code_options(retry_set: list[str] | None, **retry: Any) -> dict[str, Any]:
    """Options as the SDK sends them: every retry field filled, `retry_set` those set."""
    full = {"max_attempts": 3, "initial_interval": 1.0, "backoff_coefficient": 2.0}
    full |= {"max_interval": 100.0, "non_retryable_errors": [], **retry}
    options: dict[str, Any] = {"retry": full}
    if retry_set is not None:
        options["retry_set"] = retry_set
    return options


def started(namespace: str = "team") -> tuple[Driver, str, dict[str, Any]]:
    d = Driver()
    d.engine.set_retry_defaults("team", "wf", DEFAULTS)
    d.register("w1", namespace=namespace)
    rid = d.start(namespace=namespace)
    return d, rid, d.workflow_task("w1")


def test_an_activity_whose_code_sets_no_retry_takes_the_workflows() -> None:
    d, rid, wft = started()
    d.commands("w1", wft, act(1, **code_options([])))
    retry = scheduled_retry(d, rid, 1)
    assert (retry["max_attempts"], retry["initial_interval"]) == (2, 0.5)
    assert retry["non_retryable_errors"] == ["KeyError"]
    assert retry["backoff_coefficient"] == 2.0, "the built-in default where neither sets it"
    d.fail("w1", d.take_one("w1", "activity"))
    d.tick(0.5)
    d.fail("w1", d.take_one("w1", "activity"))
    resolution = d.take_one("w1", "resolution")
    assert (resolution["ok"], resolution["error"]["attempts"]) == (False, 2)


def test_a_field_the_code_sets_wins_over_the_workflows() -> None:
    d, rid, wft = started()
    d.commands("w1", wft, act(1, **code_options(["max_attempts"], max_attempts=5)))
    retry = scheduled_retry(d, rid, 1)
    assert (retry["max_attempts"], retry["initial_interval"]) == (5, 0.5)


def test_options_that_do_not_say_what_the_code_set_are_all_the_codes() -> None:
    d, rid, wft = started()
    d.commands("w1", wft, act(1, **code_options(None)))
    assert scheduled_retry(d, rid, 1)["max_attempts"] == 3


def test_another_namespaces_workflow_of_the_same_name_keeps_the_built_in_policy() -> None:
    d, rid, wft = started(namespace="other")
    d.commands("w1", wft, act(1, **code_options([])))
    assert scheduled_retry(d, rid, 1)["max_attempts"] == 3


def test_defaults_apply_from_the_change_on_and_the_history_keeps_what_was_scheduled() -> None:
    d, rid, wft = started()
    d.commands("w1", wft, open_session(1, f"{rid}/s"), act(2, **code_options([])))
    d.engine.set_retry_defaults("team", "wf", None)
    d.commands("w1", wft, act(3, **code_options([])))
    assert scheduled_retry(d, rid, 2)["max_attempts"] == 2
    assert scheduled_retry(d, rid, 3)["max_attempts"] == 3
    fresh = restarted(d)
    assert fresh.run(rid).activities[2].options["retry"]["max_attempts"] == 2


def test_the_workflow_task_carries_the_defaults_for_local_activities() -> None:
    d, _, wft = started()
    assert wft["retry_defaults"] == DEFAULTS
    d.register("w2", namespace="other")
    d.start(namespace="other")
    assert d.workflow_task("w2")["retry_defaults"] is None


def test_every_retry_field_of_the_workflow_acts() -> None:
    d = Driver()
    d.engine.set_retry_defaults(
        "team",
        "wf",
        {
            "max_attempts": 4,
            "initial_interval": 1.0,
            "backoff_coefficient": 3.0,
            "max_interval": 2.0,
        },
    )
    d.register("w1", namespace="team")
    d.start(namespace="team")
    d.commands("w1", d.workflow_task("w1"), act(1, **code_options([])))
    d.fail("w1", d.take_one("w1", "activity"))
    d.tick(1.0)  # initial_interval
    d.fail("w1", d.take_one("w1", "activity"))
    d.tick(1.9)  # 1 s x 3 = 3 s, capped at max_interval 2 s
    assert d.take("w1", "activity") == []
    d.tick(0.1)
    d.fail("w1", d.take_one("w1", "activity"))
    d.tick(2.0)
    d.fail("w1", d.take_one("w1", "activity"))
    assert d.take_one("w1", "resolution")["error"]["attempts"] == 4


def test_the_workflows_non_retryable_errors_fail_at_once() -> None:
    d, _, wft = started()
    d.commands("w1", wft, act(1, **code_options([])))
    d.fail("w1", d.take_one("w1", "activity"), "KeyError")
    resolution = d.take_one("w1", "resolution")
    assert (resolution["ok"], resolution["error"]["attempts"]) == (False, 1)
