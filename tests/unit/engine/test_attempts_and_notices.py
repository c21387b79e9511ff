"""What a user sees of failures: every attempt in the run view, and the notices dev mode logs."""

from __future__ import annotations

from tether_operator.engine import Run
from tether_operator.engine.views import run_view
from tether_types.notices import RunLoss, WorkerLost
from worker_runtime.protocol import RunView

from .driver import Driver, act, open_session

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/flows.py", line 9, in predict\n'
    '    raise ValueError("boom")\n'
    "ValueError: boom\n"
)


def test_every_attempt_is_in_the_view_with_its_worker_and_error() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1, retry={"max_attempts": 3, "initial_interval": 1.0}))
    d.tick(0.25)
    d.fail("w1", d.take_one("w1", "activity"), traceback=TRACEBACK)
    d.tick(1.0)
    d.complete("w1", d.take_one("w1", "activity"), "ok")

    view = RunView.model_validate(d.view(rid))
    first, second = view.activities[0].attempts
    assert (first.attempt, first.state, first.worker, first.node) == (1, "Failed", "w1", "node-a")
    assert first.error is not None
    assert (first.error.type, first.error.message, first.error.traceback) == (
        "ValueError",
        "boom",
        TRACEBACK,
    )
    assert (first.started_at, first.finished_at, first.retry_at) == (1000.0, 1000.25, 1001.25)
    assert (second.attempt, second.state, second.error) == (2, "Completed", None)
    assert (second.started_at, second.finished_at) == (1001.25, 1001.25)


def test_timeouts_and_lost_workers_are_attempts_too() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands(
        "w1", wft, act(1, heartbeat_timeout=2.0, retry={"max_attempts": 3, "initial_interval": 0.5})
    )
    d.take_one("w1", "activity")
    d.tick(2.0)  # no heartbeat: HeartbeatTimeout
    d.tick(0.5)
    d.register("w2")
    d.take_one("w1", "activity")
    d.lose("w1")  # the second attempt dies with its worker and is retried at once on w2
    d.take_one("w2", "activity")

    attempts = RunView.model_validate(d.view(rid)).activities[0].attempts
    assert [(a.attempt, a.state, a.worker) for a in attempts] == [
        (1, "Failed", "w1"),
        (2, "Failed", "w1"),
        (3, "Running", "w2"),
    ]
    assert [a.error.type if a.error else None for a in attempts] == [
        "HeartbeatTimeout",
        "WorkerLost",
        None,
    ]
    assert attempts[1].retry_at == attempts[1].finished_at  # retried at once


def test_an_attempt_running_when_the_run_ends_is_cancelled() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    d.commands("w1", d.workflow_task("w1"), act(1))
    d.take_one("w1", "activity")
    d.tick(1.0)
    d.apply(d.engine.cancel_run(rid, d.now))
    activity = RunView.model_validate(d.view(rid)).activities[0]
    assert (activity.attempts[0].state, activity.attempts[0].finished_at) == ("Cancelled", d.now)
    assert activity.state == "Cancelled", "every activity of an ended run is in a final state"


def test_a_sessions_loss_message_does_not_repeat_the_pools_sentence() -> None:
    d = Driver()
    d.register("wf-host", activities=())
    d.register("ml-abc12", workflows={}, node="worker-a")
    rid = d.start()
    sid = f"{rid}/s1"
    d.commands("wf-host", d.workflow_task("wf-host"), open_session(1, sid), act(2, "load", sid))
    d.take_one("ml-abc12", "activity")
    said = "pod ml-abc12 on node worker-a was deleted"
    d.apply(d.engine.worker_draining("ml-abc12", "PodDeleted", said, d.now))
    (session,) = RunView.model_validate(d.view(rid)).sessions
    assert session.message == said


def test_attempts_are_the_same_after_a_replay_of_the_history() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    d.commands("w1", d.workflow_task("w1"), act(1, retry={"initial_interval": 0.1}))
    d.fail("w1", d.take_one("w1", "activity"))
    d.tick(0.1)
    live = d.view(rid)
    replayed = Run.replay(d.engine.history(rid))
    assert run_view(replayed, {rid: replayed})["activities"] == live["activities"]


def test_retries_timeouts_and_final_failures_are_noticed() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands(
        "w1",
        wft,
        act(1, retry={"max_attempts": 3, "initial_interval": 2.0}, start_to_close_timeout=5.0),
    )
    d.fail("w1", d.take_one("w1", "activity"))
    d.tick(2.0)
    d.take_one("w1", "activity")
    d.tick(5.0)  # StartToCloseTimeout
    d.tick(4.0)
    d.fail("w1", d.take_one("w1", "activity"), "KeyError", message="no such key")
    noticed = [(n.run_id, n.level, n.reason, n.message) for n in d.notices if "ctivity" in n.reason]
    assert noticed == [
        (
            rid,
            "Warning",
            "ActivityRetrying",
            "attempt 1 of 3 of activity a failed: ValueError: boom; retrying in 2s",
        ),
        (
            rid,
            "Warning",
            "ActivityTimedOut",
            "attempt 2 of 3 of activity a timed out: StartToCloseTimeout: "
            "the attempt exceeded start_to_close_timeout; retrying in 4s",
        ),
        (
            rid,
            "Warning",
            "ActivityFailed",
            "activity a failed after 3 attempts: KeyError: no such key",
        ),
    ]


def test_a_non_retryable_failure_says_so() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    d.commands("w1", d.workflow_task("w1"), act(1))
    d.fail("w1", d.take_one("w1", "activity"), "ApplicationError", non_retryable=True)
    assert d.notices[-1].reason == "ActivityFailed"
    assert d.notices[-1].message == (
        "activity a failed after 1 attempt (not retryable): ApplicationError: boom"
    )


def test_a_lost_worker_is_one_notice_that_says_what_it_broke() -> None:
    d = Driver()
    d.register("wf-host", activities=())
    d.register("w1", workflows={})
    rid = d.start()
    wft = d.workflow_task("wf-host")
    sid = f"{rid}/s1"
    d.commands("wf-host", wft, open_session(1, sid), act(2, "load", sid), act(3, "predict", sid))
    assert len(d.take("w1", "activity")) == 2
    d.notices.clear()
    d.apply(d.engine.worker_lost("w1", "ProcessExited", "pid 42 killed by SIGKILL", d.now))
    lost = [n for n in d.notices if n.reason == "WorkerLost"]
    assert [n.message for n in lost] == [
        f"worker w1 lost: ProcessExited (pid 42 killed by SIGKILL); sessions broken: {sid}; "
        "2 activity attempts retried"
    ]
    # No retry notice per attempt: the WorkerLost line already counts them.
    assert not [n for n in d.notices if n.reason.startswith("Activity")]


def test_a_lost_worker_notice_says_what_it_did_to_each_run() -> None:
    """The WorkerLost notice carries its consequences per run, so a host tells each run
    without reading the message or the run's history."""
    d = Driver()
    d.register("w1")
    sticky = d.start()
    sid = f"{sticky}/s1"
    d.commands("w1", d.workflow_task("w1"), open_session(1, sid), act(2, "a", sid))
    d.take_one("w1", "activity")
    replayed = d.start()
    d.workflow_task("w1")
    d.lose("w1")

    (lost,) = [n for n in d.notices if isinstance(n, WorkerLost)]
    assert (lost.worker_id, lost.loss, lost.run_id, lost.level) == (
        "w1",
        "ProcessExited",
        None,
        "Warning",
    )
    assert lost.message.startswith("worker w1 lost: ProcessExited; sessions broken: ")
    by_run = {loss.run_id: loss for loss in lost.runs}
    assert by_run[sticky] == RunLoss(
        sticky, sessions=(sid,), attempts=((2, 1),), workflow_replayed=True
    )
    assert by_run[replayed] == RunLoss(replayed, workflow_replayed=True)
