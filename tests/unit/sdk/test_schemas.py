"""Parameter schemas from signatures, and the input rule applied from them."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema_rs import Draft202012Validator, meta
from pydantic import BaseModel

from worker_runtime import activity
from worker_runtime.schemas import (
    POSITIONAL_KEY,
    POSITIONAL_ONLY_KEY,
    BoundInput,
    InvalidInputError,
    bind_input,
    parameters_schema,
)
from worker_runtime.workflow import define, entrypoint, get_definition


class Item(BaseModel):
    x: int
    label: str = ""


class Opaque:
    """A type pydantic cannot describe."""


async def batch_fn(batch: list[Item], limit: int = 10, *, tag: str | None = None) -> None: ...


async def one_int(x: int) -> None: ...


async def no_args() -> None: ...


async def untyped(a, b=None):  # type: ignore[no-untyped-def]
    ...


async def one_dict(config: dict[str, Any]) -> None: ...


async def with_extra(x: int, **rest: int) -> None: ...


async def positional_only(a: int, b: int = 0, /, c: int = 0) -> None: ...


async def var_positional(*items: int) -> None: ...


async def opaque(thing: Opaque, n: int) -> None: ...


async def keyword_only(*, k: int) -> None: ...


async def clashing(json: int, model_config: str, _private: bool) -> None: ...


def valid(schema: dict[str, Any], instance: Any) -> bool:
    return Draft202012Validator(schema).is_valid(instance)


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    "fn",
    [batch_fn, one_int, no_args, untyped, one_dict, with_extra, positional_only, opaque, clashing],
)
def test_every_schema_is_valid_json_schema(fn: Any) -> None:
    meta.validate(parameters_schema(fn))


def test_typed_parameters_defaults_and_models() -> None:
    schema = parameters_schema(batch_fn)
    assert schema["type"] == "object"
    assert list(schema["properties"]) == ["batch", "limit", "tag"]
    assert schema["required"] == ["batch"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["limit"] == {"type": "integer", "default": 10}
    assert schema[POSITIONAL_KEY] == "batch"
    assert valid(schema, {"batch": [{"x": 1}], "tag": "t"})
    assert not valid(schema, {"batch": [{"x": "one"}]})
    assert not valid(schema, {"batch": [{"y": 1}]})
    assert not valid(schema, {"batch": [], "wrong": 1})


def test_untyped_and_undescribable_parameters_accept_any_json() -> None:
    schema = parameters_schema(untyped)
    assert schema["properties"]["a"] == {}
    assert schema["required"] == ["a"]
    for value in (1, "s", None, [1, {"k": 2}], {"nested": True}):
        assert valid(schema, {"a": value, "b": value})
    schema = parameters_schema(opaque)
    assert schema["properties"]["thing"] == {}
    assert schema["properties"]["n"] == {"type": "integer"}


def test_names_that_clash_with_pydantic_attributes_are_fine() -> None:
    schema = parameters_schema(clashing)
    assert list(schema["properties"]) == ["json", "model_config", "_private"]
    assert schema["required"] == ["json", "model_config", "_private"]


def test_no_parameters() -> None:
    schema = parameters_schema(no_args)
    assert schema["properties"] == {}
    assert "required" not in schema
    assert POSITIONAL_KEY not in schema


def test_var_keyword_types_the_extra_keys() -> None:
    schema = parameters_schema(with_extra)
    assert schema["additionalProperties"] == {"type": "integer"}
    assert "**rest" not in schema["properties"]
    assert valid(schema, {"x": 1, "other": 2})
    assert not valid(schema, {"x": 1, "other": "two"})


def test_positional_only_and_var_positional_are_marked() -> None:
    assert parameters_schema(positional_only)[POSITIONAL_ONLY_KEY] == ["a", "b"]
    assert parameters_schema(var_positional)[POSITIONAL_KEY] == "*items"
    assert POSITIONAL_KEY not in parameters_schema(keyword_only)


def test_a_workflow_schema_skips_self() -> None:
    @define(name="schema-wf")
    class Wf:
        @entrypoint
        async def run(self, name: str, times: int = 1) -> str:
            return name * times

    definition = get_definition(Wf)
    schema = definition.input_schema()
    assert list(schema["properties"]) == ["name", "times"]
    assert definition.spec().input_schema == schema


def test_an_activity_registers_its_schema() -> None:
    @activity(name="schema-act")
    async def act(item: Item, retries: int = 0) -> None: ...

    spec = act.spec()
    assert spec.input_schema is not None
    assert spec.input_schema["required"] == ["item"]
    assert "$defs" in spec.input_schema


def test_unresolvable_string_annotations_accept_any_json() -> None:
    async def fn(a: NotDefinedAnywhere, b: int) -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    fn.__annotations__["a"] = "NotDefinedAnywhere"
    fn.__annotations__["b"] = "int"
    schema = parameters_schema(fn)
    assert schema["properties"] == {"a": {}, "b": {"type": "integer"}}


# --------------------------------------------------------------------------- the input rule


def bind(fn: Any, value: Any) -> BoundInput:
    return bind_input(parameters_schema(fn), value, what="workflow 'wf'")


def refused(fn: Any, value: Any) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        bind(fn, value)
    assert caught.value.reason == "InvalidInput"
    return caught.value


def test_null_calls_with_no_arguments() -> None:
    assert bind(no_args, None) == BoundInput("none", (), {})

    async def optional(n: int = 1) -> None: ...

    assert bind(optional, None) == BoundInput("none", (), {})


def test_null_is_refused_when_a_parameter_is_required() -> None:
    error = refused(one_int, None)
    assert error.field == "input.x"
    assert "null" in error.message
    assert '{"x": ...}' in error.message


def test_an_object_of_parameter_names_is_keywords() -> None:
    bound = bind(batch_fn, {"batch": [], "tag": "t"})
    assert bound == BoundInput("keywords", (), {"batch": [], "tag": "t"})


def test_empty_object_for_a_one_argument_workflow_is_refused() -> None:
    error = refused(one_int, {})
    assert error.field == "input.x"
    assert "missing required parameter 'x'" in error.message
    error = refused(one_dict, {})
    assert error.field == "input.config"


def test_empty_object_is_fine_when_nothing_is_required() -> None:
    async def optional(n: int = 1, *, k: str = "") -> None: ...

    assert bind(no_args, {}) == BoundInput("keywords", (), {})
    assert bind(optional, {}) == BoundInput("keywords", (), {})
    assert bind(optional, 3) == BoundInput("positional", (3,), {}, target="n")


def test_missing_argument_names_it() -> None:
    error = refused(untyped, {"b": 1})
    assert error.field == "input.a"
    assert "'a'" in error.message


def test_anything_else_is_the_single_positional_argument() -> None:
    assert bind(one_int, 5) == BoundInput("positional", (5,), {}, target="x")
    assert bind(batch_fn, [{"x": 1}]).args == ([{"x": 1}],)
    # An object whose keys are not all parameter names is the one argument itself.
    assert bind(one_dict, {"a": 1}) == BoundInput("positional", ({"a": 1},), {}, target="config")
    assert bind(one_dict, {"config": 1, "a": 2}).args == ({"config": 1, "a": 2},)
    assert bind(var_positional, 3) == BoundInput("positional", (3,), {}, target="*items")


def test_an_object_of_parameter_names_stays_keywords_for_a_dict_parameter() -> None:
    assert bind(one_dict, {"config": {"a": 1}}).kwargs == {"config": {"a": 1}}


def test_a_single_value_for_two_required_parameters_is_refused() -> None:
    # `untyped` has one required parameter: a list is its argument.
    assert bind(untyped, [1, 2]).args == ([1, 2],)

    async def two(a: int, b: int) -> None: ...

    error = refused(two, 1)
    assert error.field == "input"
    assert "a, b" in error.message
    error = refused(two, {"a": 1, "wrong": 2})
    assert error.field == "input.wrong"
    assert "no parameter 'wrong'" in error.message


def test_a_value_for_a_workflow_without_parameters_is_refused() -> None:
    error = refused(no_args, 5)
    assert error.field == "input"
    assert "takes no input" in error.message
    error = refused(no_args, {"x": 1})
    assert error.field == "input.x"


def test_keyword_only_parameters_cannot_be_positional() -> None:
    error = refused(keyword_only, 1)
    assert "k" in error.message
    assert bind(keyword_only, {"k": 1}).kwargs == {"k": 1}


def test_var_keyword_takes_any_object_as_keywords() -> None:
    assert bind(with_extra, {"x": 1, "other": 2}).kwargs == {"x": 1, "other": 2}
    assert refused(with_extra, {"other": 2}).field == "input.x"

    async def options_only(**options: Any) -> None: ...

    assert bind(options_only, {"a": 1}).kwargs == {"a": 1}
    assert "keyword arguments only" in refused(options_only, [1]).message


def test_positional_only_parameters_are_passed_by_position() -> None:
    assert bind(positional_only, {"a": 1, "c": 3}) == BoundInput("keywords", (1,), {"c": 3})
    assert bind(positional_only, {"a": 1, "b": 2}).args == (1, 2)
    error = refused(positional_only, {"b": 2})
    assert error.field == "input.a"
