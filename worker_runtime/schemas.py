"""Input schemas from signatures, and the rule that maps a run input to arguments.

``parameters_schema(fn)`` describes a function's parameters as one JSON Schema object
(pydantic derives each property from the parameter's type hint; an untyped parameter,
or one whose type has no JSON form, accepts any JSON). Two Tether keywords carry what
JSON Schema cannot say about a call:

- ``x-tether-positional``: the parameter a single positional input binds to (the first
  parameter that can be passed positionally; ``*name`` for a ``*args`` parameter);
- ``x-tether-positional-only``: positional-only parameters, passed by position even
  when the input names them.

``bind_input(schema, value)`` applies the documented input rule to a run input: ``null``
calls with no arguments, an object whose keys are all parameter names is passed as
keyword arguments, anything else is the single positional argument. The SDK calls it
on the worker; the scheduler calls it before validating types, so both sides agree.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, create_model
from pydantic.json_schema import PydanticJsonSchemaWarning

from .errors import TetherError

__all__ = [
    "POSITIONAL_KEY",
    "POSITIONAL_ONLY_KEY",
    "BoundInput",
    "InvalidInputError",
    "bind_input",
    "parameters_schema",
]

POSITIONAL_KEY = "x-tether-positional"
"""Schema keyword: the parameter a single positional input binds to."""

POSITIONAL_ONLY_KEY = "x-tether-positional-only"
"""Schema keyword: names of positional-only parameters, in order."""

_VAR_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_POSITIONAL_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class InvalidInputError(TetherError, TypeError):
    """A run input does not fit the entrypoint's parameters.

    ``field`` is the dotted location (``input``, ``input.x``), ``reason`` is
    ``InvalidInput`` (the run fails with that reason).
    """

    reason = "InvalidInput"

    def __init__(self, message: str, *, field: str = "input") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class BoundInput:
    """How a run input is passed: ``mode`` and the call's arguments.

    ``target`` is the parameter a positional input binds to (``None`` otherwise).
    """

    mode: Literal["none", "keywords", "positional"]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    target: str | None = None


# --------------------------------------------------------------------------- schemas


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # A forward reference that does not resolve: take the hints one by one below.
        return {}


def _annotation(fn: Callable[..., Any], param: inspect.Parameter, hints: Mapping[str, Any]) -> Any:
    if param.name in hints:
        return hints[param.name]
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return Any
    if isinstance(annotation, str):
        try:
            return eval(annotation, getattr(fn, "__globals__", {}))
        except Exception:
            return Any
    return annotation


def _describable(annotation: Any) -> bool:
    """Whether pydantic can give ``annotation`` a JSON Schema."""
    try:
        model = create_model("Probe", value=(annotation, ...))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            model.model_json_schema()
    except Exception:
        return False
    return True


def _strip_titles(schema: dict[str, Any]) -> None:
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)


@dataclass(frozen=True, slots=True)
class _Param:
    alias: str
    annotation: Any
    default: Any


def _model_schema(params: list[_Param]) -> dict[str, Any]:
    # Field names are neutral (`p0`, `p1`, ...) so that a parameter called `json` or
    # `_x` cannot collide with pydantic's own attributes; the alias is the name.
    fields: dict[str, Any] = {
        f"p{index}": (p.annotation, Field(p.default, alias=p.alias))
        for index, p in enumerate(params)
    }
    model = create_model("Parameters", **fields)
    with warnings.catch_warnings():
        # A default with no JSON form is left out of the schema; that is fine.
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        return model.model_json_schema(by_alias=True, mode="validation")


def _any_json(param: _Param) -> _Param:
    return _Param(param.alias, Any, param.default)


def _robust_schema(params: list[_Param]) -> dict[str, Any]:
    """The parameters' schema; a type pydantic cannot describe becomes any JSON."""
    with contextlib.suppress(Exception):  # a type pydantic cannot describe: go on without it
        return _model_schema(params)
    described = [p if _describable(p.annotation) else _any_json(p) for p in params]
    try:
        return _model_schema(described)
    except Exception:
        # Some default or combination still fails: keep the names, check no types.
        return _model_schema([_Param(p.alias, Any, ...) for p in params])


@functools.cache
def parameters_schema(fn: Callable[..., Any], *, skip_first: bool = False) -> dict[str, Any]:
    """The JSON Schema (an object) of ``fn``'s parameters; ``skip_first`` drops ``self``.

    Required parameters are those without a default. Extra keys are refused unless
    ``fn`` takes ``**kwargs`` (their type then describes the extra values).
    """
    signature = list(inspect.signature(fn).parameters.values())
    if skip_first:
        signature = signature[1:]
    hints = _type_hints(fn)
    params: list[_Param] = []
    positional: str | None = None
    positional_only: list[str] = []
    extra_alias: str | None = None
    for param in signature:
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            if positional is None:
                positional = f"*{param.name}"
            continue
        if param.kind in _POSITIONAL_KINDS and positional is None:
            positional = param.name
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional_only.append(param.name)
        alias = param.name
        default = ... if param.default is inspect.Parameter.empty else param.default
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            # Described like a parameter, then moved to `additionalProperties`.
            alias = extra_alias = f"**{param.name}"
            default = ...
        params.append(_Param(alias, _annotation(fn, param, hints), default))
    schema = _robust_schema(params)
    _strip_titles(schema)
    properties: dict[str, Any] = schema.setdefault("properties", {})
    required: list[str] = schema.get("required", [])
    schema["additionalProperties"] = False
    if extra_alias is not None:
        schema["additionalProperties"] = properties.pop(extra_alias) or True
        required = [name for name in required if name != extra_alias]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    if positional is not None:
        schema[POSITIONAL_KEY] = positional
    if positional_only:
        schema[POSITIONAL_ONLY_KEY] = positional_only
    return schema


# --------------------------------------------------------------------------- the input rule


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def _example(names: list[str]) -> str:
    return "{" + ", ".join(f'"{name}": ...' for name in names) + "}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bind_input(
    schema: Mapping[str, Any], value: Any, *, what: str = "the entrypoint"
) -> BoundInput:
    """Map a run input to call arguments by the documented rule, applied from ``schema``.

    Raises ``InvalidInputError`` naming the field when the input cannot be a call:
    ``null`` while a parameter is required, an object missing a required parameter
    (``{}`` included), an object with an unknown key for an entrypoint that cannot
    take it whole, or a single value for an entrypoint that needs 0 or 2+ arguments.
    Types are not checked here.
    """
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required: list[str] = list(schema.get("required") or ())
    takes_extra = schema.get("additionalProperties", False) is not False
    positional = schema.get(POSITIONAL_KEY)
    positional_only: list[str] = list(schema.get(POSITIONAL_ONLY_KEY) or ())
    names = list(properties)
    if value is None:
        if required:
            alone = " (or the value itself)" if required == [positional] else ""
            raise InvalidInputError(
                f"{what} needs {_names(required)}; a null input calls it with no arguments: "
                f"pass an object such as {_example(required)}{alone}",
                field=f"input.{required[0]}",
            )
        return BoundInput("none", (), {})
    if isinstance(value, dict) and all(key in properties or takes_extra for key in value):
        missing = [name for name in required if name not in value]
        if missing:
            raise InvalidInputError(
                f"{what} is missing required parameter {missing[0]!r} "
                f"(required: {_names(required)}; the input object has "
                f"{_names([str(k) for k in value]) if value else 'no keys'})",
                field=f"input.{missing[0]}",
            )
        return _keywords(value, positional_only)
    others = [name for name in required if name != positional]
    if positional is None or others:
        unknown = [str(k) for k in value if k not in properties] if isinstance(value, dict) else []
        if unknown:
            raise InvalidInputError(
                f"{what} has no parameter {unknown[0]!r}; its parameters are {_names(names)}",
                field=f"input.{unknown[0]}",
            )
        if positional is None and takes_extra:
            raise InvalidInputError(
                f"{what} takes keyword arguments only; pass an object (got {_short(value)})"
            )
        if not names and positional is None:
            raise InvalidInputError(
                f"{what} takes no input; start it with null (got {_short(value)})"
            )
        raise InvalidInputError(
            f"{what} takes {_names(names)} (required: {_names(required)}); pass them as an "
            f"object such as {_example(required or names)}: a single value is only the "
            f"argument of an entrypoint with one required parameter"
        )
    return BoundInput("positional", (value,), {}, target=positional)


def _keywords(value: dict[str, Any], positional_only: list[str]) -> BoundInput:
    kwargs = dict(value)
    args: list[Any] = []
    for index, name in enumerate(positional_only):
        if name not in kwargs:
            later = [n for n in positional_only[index + 1 :] if n in kwargs]
            if later:
                raise InvalidInputError(
                    f"positional-only parameter {later[0]!r} cannot be given without {name!r}",
                    field=f"input.{name}",
                )
            break
        args.append(kwargs.pop(name))
    return BoundInput("keywords", tuple(args), kwargs)
