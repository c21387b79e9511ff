"""JSON payload checks: every activity and workflow input/output is JSON of at most 2 MiB."""

from __future__ import annotations

import json
from typing import Any

from .errors import PayloadError, PayloadTooLargeError
from .protocol import MAX_PAYLOAD_BYTES

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encoded_size(value: Any) -> int:
    """Size in bytes of ``value``'s compact JSON encoding; raises ``TypeError``/``ValueError``."""
    text = _dumps(value)
    # Fast path: ASCII text has as many bytes as characters.
    return len(text) if text.isascii() else len(text.encode())


def check_input(name: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> None:
    """Check the arguments of a call to activity/workflow ``name``.

    Raises ``PayloadError`` naming the offending argument, or ``PayloadTooLargeError``.
    """
    try:
        size = encoded_size([args, kwargs]) if kwargs else encoded_size(args)
    except (TypeError, ValueError) as exc:
        raise PayloadError(_find_bad_argument(name, args, kwargs, exc)) from exc
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(name, "input", size, MAX_PAYLOAD_BYTES)


def check_value(name: str, direction: str, value: Any) -> None:
    """Check one payload (a result, a workflow input); ``direction`` is "input" or "output"."""
    try:
        size = encoded_size(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{direction} of {name!r} is not JSON-serialisable ({type(value).__name__}): {exc}"
        ) from exc
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(name, direction, size, MAX_PAYLOAD_BYTES)


def json_roundtrip(value: Any) -> Any:
    """Return ``value`` as it would come back from history (tuples become lists, ...)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.loads(_dumps(value))


def _find_bad_argument(
    name: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], exc: Exception
) -> str:
    labelled: list[tuple[str, Any]] = [(f"positional argument {i}", a) for i, a in enumerate(args)]
    labelled += [(f"argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in labelled:
        try:
            _dumps(value)
        except (TypeError, ValueError):
            return (
                f"{label} of {name!r} is not JSON-serialisable "
                f"({type(value).__name__}): inputs must be JSON (str, int, dict, list, ...)"
            )
    return f"input of {name!r} is not JSON-serialisable: {exc}"
