"""A Workflow's spec.retry reaches the engine as the fields the user wrote, and follows
every change of the Workflow, its deletion included."""

from __future__ import annotations

from typing import Any

from tether_operator.k8s.resources.specs import WorkflowSpec
from tether_operator.k8s.runs.workflows import WorkflowDirectory, retry_defaults


def event(type_: str, spec: dict[str, Any], namespace: str = "team") -> dict[str, Any]:
    meta = {"namespace": namespace, "name": "wf", "generation": 1}
    return {"type": type_, "object": {"metadata": meta, "spec": spec}}


def test_only_the_fields_written_are_defaults_in_seconds() -> None:
    spec = WorkflowSpec.model_validate(
        {"retry": {"maxAttempts": 5, "initialInterval": "500ms", "maxInterval": "1m"}}
    )
    assert retry_defaults(spec) == {
        "max_attempts": 5,
        "initial_interval": 0.5,
        "max_interval": 60.0,
    }
    assert retry_defaults(WorkflowSpec.model_validate({})) is None
    assert retry_defaults(WorkflowSpec.model_validate({"retry": {}})) is None
    assert retry_defaults(None) is None


def test_listeners_hear_every_spec_and_its_deletion() -> None:
    directory = WorkflowDirectory()
    directory.on_event(event("ADDED", {"retry": {"maxAttempts": 2}}))
    heard: list[tuple[str, str, dict[str, Any] | None]] = []
    directory.subscribe(lambda ns, name, spec: heard.append((ns, name, retry_defaults(spec))))
    assert heard == [("team", "wf", {"max_attempts": 2})], "what is known already"
    directory.on_event(event("MODIFIED", {"retry": {"maxAttempts": 4}}))
    directory.on_event(event("MODIFIED", {"retry": {"maxAttempts": 0}}))  # invalid
    directory.on_event(event("DELETED", {}))
    assert heard[1:] == [
        ("team", "wf", {"max_attempts": 4}),
        ("team", "wf", None),
        ("team", "wf", None),
    ]
