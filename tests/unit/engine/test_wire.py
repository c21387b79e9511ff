"""The engine speaks the protocol: every message it delivers validates against the wire models.

The engine builds plain dicts (no pydantic on its hot path); these tests hold those
dicts to `worker_runtime.protocol`, and the shared vocabulary (`tether_types.wire`)
to both sides: defaults, loss reasons, history event types and replay steps.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant
from pydantic import BaseModel, TypeAdapter

from tether_operator.engine import Deliver, Effect, InvalidCommand, Run
from tether_operator.engine.runs import _HANDLERS
from tether_types import wire
from worker_runtime import protocol
from worker_runtime.workflow_instance import fold_history

from .driver import Driver, act, done, open_session
from .test_properties import PROPERTY_SETTINGS, EngineMachine

TASK: TypeAdapter[Any] = TypeAdapter(protocol.Task)


def check_delivered(effects: list[Effect]) -> None:
    """Every Deliver carries a valid protocol Task of the kind its `kind` key names."""
    for fx in effects:
        if isinstance(fx, Deliver):
            task = TASK.validate_python(fx.message)
            assert task.kind == fx.message["kind"]
            # No key is lost or invented on the way through the model.
            assert set(fx.message) <= set(type(task).model_fields), fx.message


def check_steps(run: Run) -> None:
    """The SDK's fold of the run's history sees the same steps as the engine's fold."""
    folded = fold_history([protocol.HistoryEventModel(**e) for e in run.history])
    assert {seq: (r.kind, r.name) for seq, r in folded.commands.items()} == run.steps


class WireMachine(EngineMachine):
    """The engine state machine, holding every delivered message to the protocol."""

    def call(self, effects: list[Effect]) -> None:
        check_delivered(effects)
        super().call(effects)

    @invariant()
    def check(self) -> None:
        super().check()
        for run in self.engine.runs.values():
            check_steps(run)


WireMachine.TestCase.settings = settings(PROPERTY_SETTINGS, max_examples=60)
TestDeliveredMessagesValidate = WireMachine.TestCase


class Checked(Driver):
    def apply(self, effects: list[Effect]) -> list[Effect]:
        check_delivered(effects)
        return super().apply(effects)


def test_every_kind_of_message_validates() -> None:
    d = Checked()
    d.register("w1")
    rid = d.start(input={"x": 1})
    wft = d.workflow_task("w1")
    d.commands("w1", wft, open_session(1, f"{rid}/s1", "HARD"))
    d.commands("w1", wft, act(2, session=f"{rid}/s1", start_to_close_timeout=5.0))
    first = d.take_one("w1", "activity")
    d.fail("w1", first)
    d.tick(1.0)  # the retry backoff
    second = d.take_one("w1", "activity")
    d.complete("w1", second, {"ok": True})
    assert d.take_one("w1", "resolution")["ok"] is True
    d.commands("w1", wft, act(3, start_to_close_timeout=1.0))
    d.take_one("w1", "activity")
    d.tick(1.0)  # start_to_close passes: the attempt is cancelled
    assert d.take_one("w1", "cancel")["reason"] == "StartToCloseTimeout"
    d.commands("w1", wft, done(4, "r"))
    assert d.view(rid)["phase"] == "Succeeded"


def test_defaults_are_the_protocol_defaults() -> None:
    assert protocol.RetryPolicy().model_dump() == wire.default_retry_policy()
    fields = protocol.StartRunRequest.model_fields
    assert fields["schedule_timeout"].default == wire.DEFAULT_SCHEDULE_TIMEOUT
    assert get_args(protocol.WorkerLostRequest.model_fields["reason"].annotation) == (
        wire.LOSS_REASONS
    )


def test_message_shapes_match_the_protocol_models() -> None:
    pairs: list[tuple[Any, type[BaseModel]]] = [
        (wire.ActivityTaskMessage, protocol.ActivityTask),
        (wire.WorkflowTaskMessage, protocol.WorkflowTask),
        (wire.ResolutionMessage, protocol.Resolution),
        (wire.CancelMessage, protocol.CancelTask),
    ]
    for shape, model in pairs:
        keys = shape.__required_keys__ | shape.__optional_keys__
        fields = model.model_fields
        assert keys <= set(fields), f"{shape.__name__} has keys {model.__name__} lacks"
        missing = {f for f in set(fields) - keys if fields[f].is_required()}
        assert not missing, f"{shape.__name__} lacks required {sorted(missing)}"


def test_the_fold_handles_every_history_event_type() -> None:
    assert set(_HANDLERS) | {"RunStarted"} == set(wire.EVENT_TYPES)
    steps = {kind for kind, _ in wire.STEP_OF_EVENT.values()}
    assert steps == set(get_args(wire.StepKind))


def test_an_unknown_loss_reason_is_refused_naming_the_field() -> None:
    d = Driver()
    d.register("w1")
    with pytest.raises(InvalidCommand, match=r"'Vanished'.*PodDeleted") as caught:
        d.engine.worker_lost("w1", "Vanished", "", d.now)
    assert caught.value.field == "reason"
    assert d.engine.workers["w1"].alive


def test_an_evicted_pod_fails_its_hard_session_at_once() -> None:
    d = Driver()
    d.register("w1", workflows={"wf": "HARD"})
    rid = d.start()
    d.workflow_task("w1")
    d.lose("w1", "Evicted")
    view = d.view(rid)
    assert (view["phase"], view["error"]["reason"]) == ("Failed", "SessionBroken")
    assert "Evicted" in view["error"]["message"]


def test_a_loss_report_refines_only_a_less_specific_non_final_one() -> None:
    assert wire.refines("NodeLost", "HeartbeatTimeout")
    assert wire.refines("PodDeleted", "ProcessExited")
    assert wire.refines("NodeLost", "ProcessExited")
    assert not wire.refines("HeartbeatTimeout", "ProcessExited")
    assert not wire.refines("ProcessExited", "PodDeleted")
    assert not wire.refines("Evicted", "PodDeleted")  # a final reason stays
    for reason in wire.LOSS_REASONS:
        assert not wire.refines(reason, reason)
        assert wire.loss_specificity(reason) == 3 or not wire.is_permanent_loss(reason)


def test_every_wire_command_is_a_typed_command_with_the_same_fields_and_defaults() -> None:
    """The pydantic command models validate the wire; the engine takes `tether_types`'
    commands. One shape: same `type`s, same field names, same defaults."""
    import dataclasses
    import typing

    from tether_types.commands import COMMAND_TYPES, command_from_wire

    union = typing.get_args(typing.get_args(protocol.WorkflowCommand)[0])
    models = {m.model_fields["type"].default: m for m in union}
    assert set(models) == set(COMMAND_TYPES)
    for kind, model in models.items():
        typed = COMMAND_TYPES[kind]
        fields = {f.name: f for f in dataclasses.fields(typed)}
        assert set(fields) == set(model.model_fields) - {"type"}, kind
        for name, f in fields.items():
            wire_field = model.model_fields[name]
            if wire_field.is_required() or (kind, name) == ("schedule_activity", "options"):
                continue  # options: the engine fills in what the wire's model would
            default = wire_field.get_default(call_default_factory=True)
            if f.default_factory is not dataclasses.MISSING:
                assert default == f.default_factory(), (kind, name)
            else:
                assert default == f.default, (kind, name)
    wire = protocol.ScheduleActivity(seq=1, activity="a")
    assert command_from_wire(wire.model_dump()) == COMMAND_TYPES["schedule_activity"](
        seq=1, activity="a", options=protocol.ActivityOptions().model_dump()
    )


def test_the_run_view_data_has_the_wire_views_keys_at_every_level() -> None:
    """The engine's run view (`tether_types.views`, typed dicts) and the wire's
    (`protocol.RunView`, pydantic) are one shape: the same keys, all the way down."""
    from tether_types import views

    pairs = [
        (views.RunViewData, protocol.RunView),
        (views.ActivityViewData, protocol.ActivityView),
        (views.AttemptViewData, protocol.AttemptView),
        (views.SessionViewData, protocol.SessionView),
        (views.SessionBreakData, protocol.SessionBreak),
        (views.SessionBindingData, protocol.SessionBinding),
        (views.ChildViewData, protocol.ChildView),
    ]
    for typed, model in pairs:
        assert set(typed.__annotations__) == set(model.model_fields), typed.__name__
