"""Load a user's worker module from a file path and find its workflows and activities."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from .activities import ActivityDefinition
from .workflow import is_workflow


def module_name_for(path: Path) -> str:
    """A stable module name for a file: its stem plus a short hash of its full path."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"tether_user_{stem}_{digest}"


def load_module(path: str | Path) -> ModuleType:
    """Import the Python file at ``path`` (its directory goes on ``sys.path`` first)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no such Python file: {path}")
    name = module_name_for(file)
    if name in sys.modules:
        return sys.modules[name]
    directory = str(file.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def discover(module: ModuleType) -> tuple[list[type[Any]], list[ActivityDefinition[..., Any]]]:
    """Every ``@workflow.define`` class and every activity in the module's globals."""
    workflows: list[type[Any]] = []
    activities: dict[str, ActivityDefinition[..., Any]] = {}
    for value in vars(module).values():
        if is_workflow(value):
            workflows.append(value)
        elif isinstance(value, ActivityDefinition):
            activities.setdefault(value.name, value)
    return workflows, list(activities.values())


def collect_activities(workflows: Iterable[type[Any]]) -> list[ActivityDefinition[..., Any]]:
    """Every ActivityDefinition in the module globals of each workflow class's module."""
    found: dict[str, ActivityDefinition[..., Any]] = {}
    for cls in workflows:
        module = sys.modules.get(cls.__module__)
        for value in vars(module).values() if module else ():
            if isinstance(value, ActivityDefinition):
                found.setdefault(value.name, value)
    return list(found.values())


def discover_all(
    module: ModuleType,
) -> tuple[list[type[Any]], list[ActivityDefinition[..., Any]]]:
    """What a worker started on `module` runs: its workflows, and its activities plus
    those defined beside each of its workflows (one per name)."""
    workflows, activities = discover(module)
    names = {a.name for a in activities}
    activities += [a for a in collect_activities(workflows) if a.name not in names]
    return workflows, activities
