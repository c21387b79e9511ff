"""The input catalog: schemas from registrations, and run inputs checked against them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tether_operator.scheduler import SchedulerService
from tether_operator.scheduler.inputs import InputCatalog, InvalidInput, InvalidSchema
from worker_runtime.protocol import RegisterWorkerRequest, StartRunRequest
from worker_runtime.schemas import parameters_schema


class Item(BaseModel):
    x: int


async def ml(batch: list[Item], model: str = "small") -> None: ...


async def one(x: int) -> None: ...


async def nothing() -> None: ...


async def anything(a, b=None):  # type: ignore[no-untyped-def]
    ...


async def act(text: str) -> None: ...


SCHEMAS = {
    "ml": parameters_schema(ml),
    "one": parameters_schema(one),
    "nothing": parameters_schema(nothing),
    "anything": parameters_schema(anything),
}


def registration(
    worker_id: str = "w1", schemas: dict[str, Any] | None = None, **extra: Any
) -> RegisterWorkerRequest:
    schemas = SCHEMAS if schemas is None else schemas
    return RegisterWorkerRequest.model_validate(
        {
            "worker_id": worker_id,
            "incarnation": f"{worker_id}-i",
            "workflows": [{"name": n, "input_schema": s} for n, s in schemas.items()],
            "activities": [{"name": "act", "input_schema": parameters_schema(act)}],
            **extra,
        }
    )


@pytest.fixture
def catalog() -> InputCatalog:
    cat = InputCatalog()
    cat.register(registration())
    return cat


def refused(catalog: InputCatalog, workflow: str, value: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        catalog.check_input(workflow, value, "")
    assert caught.value.reason == "InvalidInput"
    return caught.value


# --------------------------------------------------------------------------- what is refused


def test_wrong_key_names_it(catalog: InputCatalog) -> None:
    error = refused(catalog, "one", {"wrong": 1})
    assert error.field == "input.wrong"
    assert "workflow 'one' has no parameter 'wrong'" in error.message
    assert "its parameters are x" in error.message
    error = refused(catalog, "ml", {"batch": [], "wrong": 1})
    assert error.field == "input.wrong"


def test_missing_argument_names_it(catalog: InputCatalog) -> None:
    error = refused(catalog, "ml", {"model": "big"})
    assert error.field == "input.batch"
    assert "missing required parameter 'batch'" in error.message


def test_wrong_type_names_the_nested_field(catalog: InputCatalog) -> None:
    error = refused(catalog, "ml", {"batch": [{"x": 1}, {"x": "two"}]})
    assert error.field == "input.batch.1.x"
    assert error.message.startswith("workflow 'ml': input.batch.1.x: ")
    assert '"two" is not of type "integer"' in error.message


def test_missing_nested_key_names_it(catalog: InputCatalog) -> None:
    error = refused(catalog, "ml", {"batch": [{"y": 1}]})
    assert error.field == "input.batch.0.x"


def test_wrong_type_of_a_single_positional_argument(catalog: InputCatalog) -> None:
    error = refused(catalog, "one", "five")
    assert error.field == "input"
    assert "single argument 'x'" in error.message
    error = refused(catalog, "ml", [{"x": 1}, {"x": []}])
    assert error.field == "input.1.x"


def test_empty_object_for_a_one_argument_workflow(catalog: InputCatalog) -> None:
    assert refused(catalog, "one", {}).field == "input.x"


def test_null_for_a_workflow_with_a_required_parameter(catalog: InputCatalog) -> None:
    assert refused(catalog, "one", None).field == "input.x"


def test_a_value_for_a_workflow_without_parameters(catalog: InputCatalog) -> None:
    assert refused(catalog, "nothing", 3).field == "input"


def test_long_values_are_shortened_in_messages(catalog: InputCatalog) -> None:
    error = refused(catalog, "one", "y" * 10_000)
    assert len(error.message) < 600


# --------------------------------------------------------------------------- what is accepted


@pytest.mark.parametrize(
    ("workflow", "value"),
    [
        ("nothing", None),
        ("nothing", {}),
        ("one", 5),
        ("one", {"x": 5}),
        ("ml", {"batch": [{"x": 1}], "model": "big"}),
        ("ml", [{"x": 1}]),
        ("anything", {"a": {"deep": [1, None]}, "b": "s"}),
        ("anything", [1, "two", None]),
        ("anything", {"not-a-parameter": 1}),
        ("unregistered", {"whatever": 1}),
    ],
)
def test_valid_inputs_pass(catalog: InputCatalog, workflow: str, value: Any) -> None:
    catalog.check_input(workflow, value, "")


def test_a_workflow_registered_without_a_schema_is_not_checked() -> None:
    cat = InputCatalog()
    cat.register(RegisterWorkerRequest(worker_id="w", incarnation="i", workflows=[{"name": "old"}]))
    cat.check_input("old", {"anything": "goes"}, "")


def test_the_latest_registration_wins(catalog: InputCatalog) -> None:
    catalog.register(registration("w2", {"one": parameters_schema(nothing)}))
    catalog.check_input("one", None, "")
    assert refused(catalog, "one", 5).field == "input"


# --------------------------------------------------------------------------- registration


def test_an_invalid_schema_is_refused_naming_the_field() -> None:
    cat = InputCatalog()
    bad = registration(schemas={"one": SCHEMAS["one"], "bad": {"type": 12}})
    with pytest.raises(InvalidSchema) as caught:
        cat.check_registration(bad)
    assert caught.value.field == "workflows.1.input_schema"
    assert "'bad'" in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    "schema",
    [
        {"x-tether-positional": 3},
        {"x-tether-positional-only": "a"},
        {"type": "string", "pattern": "("},
        {"$ref": "#/nope"},
        {"properties": {"a": {"$ref": "#/properties/b"}, "b": {}}, "x-tether-positional": "a"},
    ],
)
def test_tether_keywords_must_have_their_types(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidSchema):
        InputCatalog().check_registration(registration(schemas={"wf": schema}))


def test_views_list_schemas_and_live_workers(catalog: InputCatalog) -> None:
    workers = [
        {"worker_id": "w2", "alive": True, "workflows": ["one"], "activities": ["act"]},
        {"worker_id": "w1", "alive": True, "workflows": ["one", "ml"], "activities": []},
        {"worker_id": "w3", "alive": False, "workflows": ["one"], "activities": ["act"]},
    ]
    views = {v["name"]: v for v in catalog.workflow_views(workers)}
    assert list(views) == ["anything", "ml", "nothing", "one"]
    assert views["one"]["workers"] == ["w1", "w2"]
    assert views["one"]["input_schema"] == SCHEMAS["one"]
    assert views["nothing"]["workers"] == []
    (activity,) = catalog.activity_views(workers)
    assert activity["name"] == "act"
    assert activity["workers"] == ["w2"]
    assert activity["options"]["retry"]["max_attempts"] == 3


def test_a_namespace_has_its_own_schema_of_a_workflow_name(catalog: InputCatalog) -> None:
    other = registration("w9", {"one": parameters_schema(nothing)})
    catalog.register(other.model_copy(update={"namespace": "team-b"}))
    catalog.check_input("one", None, "team-b")  # team-b's `one` takes no argument
    assert refused(catalog, "one", None).field == "input.x", "the default namespace's `one` needs x"
    views = [(v["namespace"], v["name"]) for v in catalog.workflow_views([])]
    assert ("", "one") in views
    assert ("team-b", "one") in views


# --------------------------------------------------------------------------- through the service


async def test_service_refuses_before_the_engine_sees_the_run(service: SchedulerService) -> None:
    service.register_worker(registration())
    with pytest.raises(InvalidInput):
        service.start_run(StartRunRequest(workflow="one", input={"wrong": 1}, run_id="r1"))
    assert service.list_runs() == []
    view = service.start_run(StartRunRequest(workflow="one", input={"x": 1}, run_id="r1"))
    assert view["run_id"] == "r1"


async def test_service_refuses_a_bad_schema_and_registers_nothing(
    service: SchedulerService,
) -> None:
    with pytest.raises(InvalidSchema):
        service.register_worker(registration(schemas={"bad": {"type": 12}}))
    assert service.workers() == []
    assert service.registered() == {"workflows": [], "activities": []}


async def test_service_lists_registrations(service: SchedulerService) -> None:
    service.register_worker(registration())
    listed = service.registered()
    assert [w["name"] for w in listed["workflows"]] == ["anything", "ml", "nothing", "one"]
    assert all(w["workers"] == ["w1"] for w in listed["workflows"])
    service.worker_lost("w1")
    assert all(w["workers"] == [] for w in service.registered()["workflows"])
